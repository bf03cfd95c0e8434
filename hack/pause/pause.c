/*
 * schedgen-pause: the pod sandbox process (what Kubernetes' own pause image runs).
 * PID 1 of the pod's sandbox: blocks forever, reaps adopted zombies, exits 0 on
 * SIGINT/SIGTERM. Handlers are installed explicitly because the kernel drops signals
 * sent to PID 1 that it has no handler for.
 *
 *   gcc -static -Os -s -o pause pause.c        (hack/images build pause does this)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
    puts("schedgen-pause 3.10");
    return 0;
  }
  if (getpid() != 1) {
    fprintf(stderr, "schedgen-pause: warning: not PID 1\n");
  }
  struct sigaction stop = {.sa_handler = on_stop};
  sigemptyset(&stop.sa_mask);
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  sigemptyset(&child.sa_mask);
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0) {
    perror("schedgen-pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}

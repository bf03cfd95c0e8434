-- The runner's stable error code gets a column of its own; until now it was folded
-- into error_message as "Code: message". Rows written that way are split here.
ALTER TABLE parse_jobs ADD COLUMN error_code text;

UPDATE parse_jobs
   SET error_code = substring(error_message FROM '^([A-Za-z]+): '),
       error_message = regexp_replace(error_message, '^[A-Za-z]+: ', '')
 WHERE error_message ~ '^[A-Za-z]+: ';

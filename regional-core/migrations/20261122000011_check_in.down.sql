DROP TABLE check_ins;
ALTER TABLE tickets DROP COLUMN used_gate;
ALTER TABLE tickets DROP COLUMN used_at;

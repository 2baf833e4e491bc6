-- Validation has no undo: the constraint stays (20261202000017's down migration drops it).
SELECT 1;

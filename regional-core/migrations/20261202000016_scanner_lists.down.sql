DROP TABLE scanner_lists;

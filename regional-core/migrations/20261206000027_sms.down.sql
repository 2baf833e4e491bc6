DROP TABLE sms_opt_outs;
DROP TABLE sms_incoming;
DROP TABLE sms_messages;
ALTER TABLE ticket_transfers DROP COLUMN to_phone;
ALTER TABLE orders DROP COLUMN phone;

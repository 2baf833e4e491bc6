DROP TABLE report_promo;
DROP TABLE report_event_minute;
DROP TABLE report_tier_minute;

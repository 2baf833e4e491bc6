DROP INDEX venues_city;
DROP INDEX events_search;

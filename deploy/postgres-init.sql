-- One database per service: a service never reads another's tables.
CREATE DATABASE inventory;
CREATE DATABASE orders;
CREATE DATABASE email;
CREATE DATABASE audit;

-- sysbench's table (oltp_common.lua, MySQL driver), created per physical copy by the tests and the benchmark.
CREATE TABLE sbtest1 (
  id INTEGER NOT NULL,
  k INTEGER DEFAULT '0' NOT NULL,
  c CHAR(120) DEFAULT '' NOT NULL,
  pad CHAR(60) DEFAULT '' NOT NULL,
  PRIMARY KEY (id),
  KEY k_1 (k)
) ENGINE=InnoDB;

-- Logical tables of schema `app`. `mdriver-sandbox up` creates every physical
-- copy of them: 1024 per sharded table, one per physical database for broadcast tables.
CREATE TABLE user_relation (
  id BIGINT UNSIGNED NOT NULL,
  uid BIGINT NOT NULL,
  target_uid BIGINT NOT NULL,
  relation_type TINYINT NOT NULL DEFAULT 1,
  remark VARCHAR(64) NULL,
  score DECIMAL(12,2) NULL,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (id),
  KEY idx_uid_target (uid, target_uid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE user_fans (
  id BIGINT UNSIGNED NOT NULL,
  uid BIGINT NOT NULL,
  fan_uid BIGINT NOT NULL,
  level INT NULL,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (id),
  KEY idx_uid_fan (uid, fan_uid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE region (
  region_id INT NOT NULL,
  name VARCHAR(64) NOT NULL,
  PRIMARY KEY (region_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The query language matches labels case-insensitively (`label:API` finds `api`); this index
-- lets `label:x` start from the label's items instead of scanning the project.
CREATE INDEX item_labels_lower ON item_labels (LOWER(label), item_id);

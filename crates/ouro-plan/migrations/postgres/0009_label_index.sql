-- The query language matches labels case-insensitively (`label:API` finds `api`); this index
-- lets `label:x` start from the label's items instead of scanning the project.
CREATE INDEX item_labels_lower ON item_labels (LOWER(label), item_id);

-- The references consumer follows the chain commit -> pipeline -> release -> deployment by
-- looking up which items a subject is linked to.
CREATE INDEX item_subject_links_subject ON item_subject_links (subject_type, subject_id);

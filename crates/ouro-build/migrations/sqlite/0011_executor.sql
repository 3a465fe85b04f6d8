-- The executor a job must run on (`executor:` in the pipeline file: `shell` or `sandbox`; NULL:
-- any). Only a runner that offers it claims the job.
ALTER TABLE build_jobs ADD COLUMN executor TEXT;

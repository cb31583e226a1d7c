-- The archive's schema as `metadata.create_all` made it before Alembic (commit 7bbdf86,
-- postgresql). Frozen: tests upgrade a database made from it to head.
CREATE TABLE audit_events (
	seq BIGINT NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	actor VARCHAR(255) NOT NULL, 
	action VARCHAR(64) NOT NULL, 
	case_id VARCHAR(36), 
	details JSON NOT NULL, 
	prev_hash VARCHAR(64) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	target VARCHAR(255), 
	department VARCHAR(64), 
	patient VARCHAR(32), 
	why TEXT, 
	outcome VARCHAR(16) NOT NULL, 
	PRIMARY KEY (seq), 
	UNIQUE (hash)
);

CREATE INDEX ix_audit_events_action ON audit_events (action);

CREATE INDEX ix_audit_events_actor ON audit_events (actor);

CREATE INDEX ix_audit_events_case_id ON audit_events (case_id);

CREATE INDEX ix_audit_events_department ON audit_events (department);

CREATE INDEX ix_audit_events_patient ON audit_events (patient);

CREATE TABLE audit_head (
	id SERIAL NOT NULL, 
	seq BIGINT NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	note TEXT NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE blobs (
	sha256 VARCHAR(64) NOT NULL, 
	size BIGINT NOT NULL, 
	storage_key VARCHAR(255) NOT NULL, 
	stored_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (sha256)
);

CREATE TABLE confidential_patients (
	patient_id VARCHAR(32) NOT NULL, 
	marked_by VARCHAR(255) NOT NULL, 
	marked_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (patient_id)
);

CREATE TABLE departments (
	id SERIAL NOT NULL, 
	hsa_id VARCHAR(64) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	registered_by VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (hsa_id)
);

CREATE TABLE form_templates (
	name VARCHAR(64) NOT NULL, 
	title VARCHAR(255) NOT NULL, 
	fields JSON NOT NULL, 
	created_by VARCHAR(255) NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE roles (
	id SERIAL NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	rights JSON NOT NULL, 
	builtin BOOLEAN NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);

CREATE TABLE users (
	id SERIAL NOT NULL, 
	username VARCHAR(64) NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (username)
);

CREATE TABLE agents (
	agent_id VARCHAR(255) NOT NULL, 
	department_id INTEGER, 
	version VARCHAR(64) NOT NULL, 
	first_seen TIMESTAMP WITH TIME ZONE NOT NULL, 
	last_seen TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (agent_id), 
	FOREIGN KEY(department_id) REFERENCES departments (id)
);

CREATE TABLE cases (
	id VARCHAR(36) NOT NULL, 
	patient_id VARCHAR(32) NOT NULL, 
	department_id INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	confidential BOOLEAN NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	current_version INTEGER NOT NULL, 
	source_session_id VARCHAR(36), 
	PRIMARY KEY (id), 
	FOREIGN KEY(department_id) REFERENCES departments (id), 
	UNIQUE (source_session_id)
);

CREATE INDEX ix_cases_patient_id ON cases (patient_id);

CREATE TABLE department_access (
	id SERIAL NOT NULL, 
	user_id INTEGER NOT NULL, 
	department_id INTEGER NOT NULL, 
	role_id INTEGER NOT NULL, 
	granted_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (user_id, department_id), 
	FOREIGN KEY(user_id) REFERENCES users (id), 
	FOREIGN KEY(department_id) REFERENCES departments (id), 
	FOREIGN KEY(role_id) REFERENCES roles (id)
);

CREATE TABLE agent_refusals (
	id SERIAL NOT NULL, 
	agent_id VARCHAR(255) NOT NULL, 
	card_key VARCHAR(255) NOT NULL, 
	reader VARCHAR(255) NOT NULL, 
	reason VARCHAR(64) NOT NULL, 
	refused_at_ms BIGINT NOT NULL, 
	refused_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	file_count INTEGER NOT NULL, 
	received_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (agent_id, card_key, refused_at_ms), 
	FOREIGN KEY(agent_id) REFERENCES agents (agent_id)
);

CREATE INDEX ix_agent_refusals_agent_id ON agent_refusals (agent_id);

CREATE TABLE agent_status (
	agent_id VARCHAR(255) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	queue_length INTEGER NOT NULL, 
	counts JSON NOT NULL, 
	last_error JSON, 
	in_progress JSON NOT NULL, 
	interval_s FLOAT NOT NULL, 
	archive_reachable BOOLEAN NOT NULL, 
	started_at TIMESTAMP WITH TIME ZONE, 
	last_heartbeat TIMESTAMP WITH TIME ZONE NOT NULL, 
	heartbeats BIGINT NOT NULL, 
	PRIMARY KEY (agent_id), 
	FOREIGN KEY(agent_id) REFERENCES agents (agent_id)
);

CREATE TABLE case_versions (
	id SERIAL NOT NULL, 
	case_id VARCHAR(36) NOT NULL, 
	version INTEGER NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	created_by VARCHAR(255) NOT NULL, 
	fields JSON NOT NULL, 
	patient_id VARCHAR(32), 
	status VARCHAR(16) NOT NULL, 
	reason TEXT NOT NULL, 
	signed_by VARCHAR(255), 
	signed_at TIMESTAMP WITH TIME ZONE, 
	form_template VARCHAR(64), 
	form JSON NOT NULL, 
	edited_by VARCHAR(255), 
	edited_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (case_id, version), 
	FOREIGN KEY(case_id) REFERENCES cases (id)
);

CREATE INDEX ix_case_versions_patient_id ON case_versions (patient_id);

CREATE TABLE consents (
	id VARCHAR(36) NOT NULL, 
	case_id VARCHAR(36) NOT NULL, 
	blob_sha256 VARCHAR(64) NOT NULL, 
	document_name VARCHAR(255) NOT NULL, 
	media_type VARCHAR(128) NOT NULL, 
	recorded_by VARCHAR(255) NOT NULL, 
	recorded_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(case_id) REFERENCES cases (id), 
	FOREIGN KEY(blob_sha256) REFERENCES blobs (sha256)
);

CREATE INDEX ix_consents_case_id ON consents (case_id);

CREATE TABLE ingest_sessions (
	id SERIAL NOT NULL, 
	session_id VARCHAR(36) NOT NULL, 
	agent_id VARCHAR(255) NOT NULL, 
	department_id INTEGER NOT NULL, 
	patient_id VARCHAR(32) NOT NULL, 
	mode VARCHAR(16) NOT NULL, 
	ehr_context BOOLEAN NOT NULL, 
	manifest JSON NOT NULL, 
	evidence JSON NOT NULL, 
	fingerprint VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	case_id VARCHAR(36), 
	opened_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	committed_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (session_id), 
	FOREIGN KEY(agent_id) REFERENCES agents (agent_id), 
	FOREIGN KEY(department_id) REFERENCES departments (id), 
	UNIQUE (case_id), 
	FOREIGN KEY(case_id) REFERENCES cases (id)
);

CREATE TABLE media_items (
	id VARCHAR(36) NOT NULL, 
	case_version_id INTEGER NOT NULL, 
	blob_sha256 VARCHAR(64) NOT NULL, 
	relative_path VARCHAR(1024) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	media_type VARCHAR(128) NOT NULL, 
	capture_time TIMESTAMP WITH TIME ZONE, 
	device_make VARCHAR(255) NOT NULL, 
	device_model VARCHAR(255) NOT NULL, 
	device_serial VARCHAR(255) NOT NULL, 
	position INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (case_version_id, relative_path), 
	FOREIGN KEY(case_version_id) REFERENCES case_versions (id), 
	FOREIGN KEY(blob_sha256) REFERENCES blobs (sha256)
);

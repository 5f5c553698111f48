package registry

import (
	"encoding/json"

	"time"
)

// RecordVersion is the format version written in every tenant record.
const RecordVersion = 1

// Status is a tenant's lifecycle state.
type Status string

const (
	// StatusProvisioning: stagesubctl has started creating the tenant and not
	// finished; re-running the create completes it. The router answers 503.
	StatusProvisioning Status = "provisioning"
	// StatusActive: routed to its app instances.
	StatusActive Status = "active"
	// StatusSuspended: the router shows the suspended page, never proxies.
	StatusSuspended Status = "suspended"
	// StatusMaintenance: the router answers 503 with Retry-After.
	StatusMaintenance Status = "maintenance"
	// StatusDeleting: deletion in progress; the router shows a page.
	StatusDeleting Status = "deleting"
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusProvisioning, StatusActive, StatusSuspended, StatusMaintenance, StatusDeleting:
		return true
	}
	return false
}

// Database is where a tenant's database lives. It holds no credentials:
// those reach the tenant's app through its deploy target only.
type Database struct {
	Server string `json:"server,omitempty"` // name of the configured Postgres server, "" = default
	Host   string `json:"host"`             // host name, IP, or a unix socket directory
	Port   int    `json:"port"`
	Name   string `json:"dbname"`
}

// Tenant is the record of one orchestra, stored as JSON at Key(Slug).
//
// Fields this version does not know are kept on decode and written back on
// encode, so an older binary's read-modify-write never drops a newer field.
// A Tenant must be copied with Clone, not by value, when the copy is modified.
type Tenant struct {
	Version         int       `json:"version"`
	Slug            string    `json:"slug"`
	Name            string    `json:"name"`
	Status          Status    `json:"status"`
	Database        Database  `json:"database"`
	Domains         []string  `json:"domains,omitempty"` // extra custom domains, normalized
	SchemaVersion   int64     `json:"schema_version"`
	BackupRecipient string    `json:"backup_recipient,omitempty"` // age public key for backups
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`

	// ModifyIndex is the Consul ModifyIndex the record was read at; 0 for a
	// record not read from Consul. Not part of the JSON.
	ModifyIndex uint64 `json:"-"`

	unknown map[string]json.RawMessage
}

// knownFields lists the JSON names of Tenant's fields.
var knownFields = map[string]bool{
	"version": true, "slug": true, "name": true, "status": true, "database": true,
	"domains": true, "schema_version": true, "backup_recipient": true,
	"created_at": true, "updated_at": true,
}

// Validate returns an EINVALID *Error describing the first problem with t.
func (t *Tenant) Validate() error {
	if err := ValidateSlug(t.Slug); err != nil {
		return err
	}
	if t.Name == "" || len(t.Name) > 200 {
		return Errorf(EINVALID, "tenant %s: name must be 1 to 200 characters long", t.Slug)
	}
	if !t.Status.Valid() {
		return Errorf(EINVALID, "tenant %s: unknown status %q", t.Slug, t.Status)
	}
	if t.Database.Name == "" {
		return Errorf(EINVALID, "tenant %s: database name is empty", t.Slug)
	}
	seen := map[string]bool{}
	for _, d := range t.Domains {
		if err := ValidateDomain(d); err != nil {
			return Errorf(EINVALID, "tenant %s: %s", t.Slug, err.(*Error).Message)
		}
		if seen[d] {
			return Errorf(EINVALID, "tenant %s: domain %q listed twice", t.Slug, d)
		}
		seen[d] = true
	}
	return nil
}

// Clone returns a deep copy of t, unknown fields included.
func (t *Tenant) Clone() *Tenant {
	c := *t
	c.Domains = append([]string(nil), t.Domains...)
	if t.unknown != nil {
		c.unknown = make(map[string]json.RawMessage, len(t.unknown))
		for k, v := range t.unknown {
			c.unknown[k] = append(json.RawMessage(nil), v...)
		}
	}
	return &c
}

type tenantJSON Tenant // no methods: avoids recursion

// MarshalJSON encodes t with its unknown fields.
func (t Tenant) MarshalJSON() ([]byte, error) {
	known, err := json.Marshal(tenantJSON(t))
	if err != nil {
		return nil, err
	}
	if len(t.unknown) == 0 {
		return known, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(known, &m); err != nil {
		return nil, err
	}
	for k, v := range t.unknown {
		if !knownFields[k] {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// UnmarshalJSON decodes a record, keeping fields it does not know.
func (t *Tenant) UnmarshalJSON(b []byte) error {
	var tj tenantJSON
	if err := json.Unmarshal(b, &tj); err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for k := range m {
		if knownFields[k] {
			delete(m, k)
		}
	}
	*t = Tenant(tj)
	if len(m) > 0 {
		t.unknown = m
	}
	return nil
}

// DecodeTenant parses a record read from Consul key Key(slug) and validates
// it. The slug in the record must match the key.
func DecodeTenant(slug string, b []byte) (*Tenant, error) {
	var t Tenant
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, Errorf(EINVALID, "tenant record %s: %v", slug, err)
	}
	if t.Slug != slug {
		return nil, Errorf(EINVALID, "tenant record %s: slug field is %q", slug, t.Slug)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

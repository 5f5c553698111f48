package registry_test

import (
	"encoding/json"
	"strings"
	"testing"

	"stagesub.dev/registry"
)

func TestValidateSlug(t *testing.T) {
	tests := []struct {
		slug string
		ok   bool
	}{
		{"goteborg", true},
		{"ab", true},
		{"malmo-2", true},
		{strings.Repeat("a", 40), true},
		{"a", false},
		{strings.Repeat("a", 41), false},
		{"Goteborg", false},
		{"-abc", false},
		{"abc-", false},
		{"a--b", false},
		{"göteborg", false},
		{"a_b", false},
		{"admin", false},
		{"www", false},
		{"api", false},
		{"consul", false},
		{"metrics", false},
	}
	for _, tt := range tests {
		err := registry.ValidateSlug(tt.slug)
		if got, want := err == nil, tt.ok; got != want {
			t.Errorf("ValidateSlug(%q) = %v, want ok=%v", tt.slug, err, want)
		}
		if err != nil && registry.ErrorCode(err) != registry.EINVALID {
			t.Errorf("ValidateSlug(%q) code = %q, want %q", tt.slug, registry.ErrorCode(err), registry.EINVALID)
		}
	}
}

func TestDatabaseName(t *testing.T) {
	if got, want := registry.DatabaseName("new-york"), "orchestra_new_york"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValidateDomain(t *testing.T) {
	tests := []struct {
		d  string
		ok bool
	}{
		{"vikarier.goteborgssymfoniker.se", true},
		{"example.com", true},
		{"localhost", false},
		{"*.example.com", false},
		{"127.0.0.1", false},
		{"example.com:443", false},
		{"a..b", false},
		{"-a.com", false},
	}
	for _, tt := range tests {
		if got, want := registry.ValidateDomain(tt.d) == nil, tt.ok; got != want {
			t.Errorf("ValidateDomain(%q) ok = %v, want %v", tt.d, got, want)
		}
	}
}

func TestTenantUnknownFieldsSurvive(t *testing.T) {
	in := `{"version":1,"slug":"goteborg","name":"GSO","status":"active",` +
		`"database":{"host":"db1","port":5432,"dbname":"orchestra_goteborg"},` +
		`"schema_version":3,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z",` +
		`"billing_plan":{"tier":"gold"},"future":[1,2]}`
	tn, err := registry.DecodeTenant("goteborg", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	tn = tn.Clone()
	tn.Status = registry.StatusSuspended
	out, err := json.Marshal(tn)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if got, want := m["status"], "suspended"; got != want {
		t.Errorf("status = %v, want %v", got, want)
	}
	if _, ok := m["billing_plan"]; !ok {
		t.Errorf("unknown field billing_plan lost: %s", out)
	}
	if _, ok := m["future"]; !ok {
		t.Errorf("unknown field future lost: %s", out)
	}
}

func TestDecodeTenantErrors(t *testing.T) {
	tests := []struct {
		name, slug, in string
	}{
		{"ErrJSON", "goteborg", `{not json`},
		{"ErrSlugMismatch", "goteborg", `{"slug":"malmo","name":"x","status":"active","database":{"dbname":"x"}}`},
		{"ErrStatus", "goteborg", `{"slug":"goteborg","name":"x","status":"gone","database":{"dbname":"x"}}`},
		{"ErrNoName", "goteborg", `{"slug":"goteborg","status":"active","database":{"dbname":"x"}}`},
		{"ErrDomain", "goteborg", `{"slug":"goteborg","name":"x","status":"active","database":{"dbname":"x"},"domains":["bad domain"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := registry.DecodeTenant(tt.slug, []byte(tt.in))
			if got, want := registry.ErrorCode(err), registry.EINVALID; got != want {
				t.Errorf("code = %q (%v), want %q", got, err, want)
			}
		})
	}
}

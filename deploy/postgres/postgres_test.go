package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"stagesub.dev/deploy/postgres"
	"stagesub.dev/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestTenantURL(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		admin, want string
	}{
		{"postgres://admin:x@db1.internal:6432/postgres?sslmode=require", "postgres://orchestra_new_york:pw@db1.internal:6432/orchestra_new_york?sslmode=require"},
		{"postgres:///postgres?host=/run/pg&port=5433&user=admin", "postgres://orchestra_new_york:pw@/orchestra_new_york?host=%2Frun%2Fpg&port=5433&sslmode=disable"},
		{"host=127.0.0.1 port=5432 user=admin sslmode=disable", "postgres://orchestra_new_york:pw@127.0.0.1:5432/orchestra_new_york?sslmode=disable"},
	}
	for _, tt := range tests {
		s, err := postgres.Open(ctx, "default", tt.admin)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.TenantURL("new-york", "pw"); got != tt.want {
			t.Errorf("TenantURL from %q:\n got %s\nwant %s", tt.admin, got, tt.want)
		}
		s.Close()
	}
}

// TestRolesAndDatabases uses a password-checking server: the SCRAM
// verifier computed here must let the role log in, a re-run must change the
// password, and a database owned by someone else is never adopted.
func TestRolesAndDatabases(t *testing.T) {
	c := pgtest.Start(t, pgtest.WithTCP())
	ctx := context.Background()
	s, err := postgres.Open(ctx, "default", c.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	login := func(pw string) error {
		conn, err := pgx.Connect(ctx, c.TCPURL("orchestra_pgt", pw, "orchestra_pgt"))
		if err == nil {
			conn.Close(ctx)
		}
		return err
	}
	if err := s.EnsureRole(ctx, "orchestra_pgt", "first-password"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := s.EnsureDatabase(ctx, "orchestra_pgt", "orchestra_pgt"); err != nil {
			t.Fatal(err)
		}
		if err := s.LockDown(ctx, "orchestra_pgt", "orchestra_pgt"); err == nil || !strings.Contains(err.Error(), "stagesub_stats") {
			// the stats role does not exist yet
			t.Fatalf("LockDown before EnsureStatsRole: %v", err)
		}
	}
	if err := s.EnsureStatsRole(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.LockDown(ctx, "orchestra_pgt", "orchestra_pgt"); err != nil {
		t.Fatal(err)
	}
	if err := login("first-password"); err != nil {
		t.Fatalf("login with the SCRAM verifier's password: %v", err)
	}
	if err := s.EnsureRole(ctx, "orchestra_pgt", "second-password"); err != nil {
		t.Fatal(err)
	}
	if err := login("first-password"); err == nil {
		t.Errorf("old password still works")
	}
	if err := login("second-password"); err != nil {
		t.Errorf("new password: %v", err)
	}
	if err := s.EnsureDatabase(ctx, "orchestra_pgt", "postgres"); err == nil || !strings.Contains(err.Error(), "owned by orchestra_pgt") {
		t.Errorf("EnsureDatabase with another owner: %v", err)
	}
	if err := s.DropTenant(ctx, "pgt"); err != nil {
		t.Fatal(err)
	}
	if err := s.DropTenant(ctx, "pgt"); err != nil {
		t.Errorf("second DropTenant: %v", err)
	}
	if err := login("second-password"); err == nil {
		t.Errorf("role survived DropTenant")
	}
}

func TestScramVerifierFormat(t *testing.T) {
	v, err := postgres.ScramVerifier("secret")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") || strings.Count(v, "$") != 2 || strings.Count(v, ":") != 2 {
		t.Errorf("verifier = %q", v)
	}
	if _, err := postgres.ScramVerifier("ünïcode"); err == nil {
		t.Errorf("non-ASCII password accepted")
	}
}

// TestLockDownProblems: a fresh database (default ACL) has PUBLIC privileges,
// LockDown clears every finding, and each later break is reported.
func TestLockDownProblems(t *testing.T) {
	c := pgtest.Start(t, pgtest.WithTCP())
	ctx := context.Background()
	s, err := postgres.Open(ctx, "default", c.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Cleanup(func() { _ = s.DropTenant(context.Background(), "ldp") })
	if err := s.EnsureRole(ctx, "orchestra_ldp", "pw-ldp-12345"); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureDatabase(ctx, "orchestra_ldp", "orchestra_ldp"); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureStatsRole(ctx, ""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		setup []string // before the check; "" = LockDown
		want  string   // joined findings
	}{
		{"fresh database", nil, "PUBLIC holds CONNECT, TEMPORARY on database orchestra_ldp; stagesub_stats lacks CONNECT on database orchestra_ldp"},
		{"owner revoked", []string{"", "REVOKE ALL ON DATABASE orchestra_ldp FROM orchestra_ldp"}, "orchestra_ldp lacks CONNECT on database orchestra_ldp; orchestra_ldp lacks TEMPORARY on database orchestra_ldp"},
		{"locked down", []string{""}, ""},
		{"public connect", []string{"", "GRANT CONNECT ON DATABASE orchestra_ldp TO PUBLIC"}, "PUBLIC holds CONNECT on database orchestra_ldp"},
		{"stats revoked", []string{"", "REVOKE CONNECT ON DATABASE orchestra_ldp FROM stagesub_stats"}, "stagesub_stats lacks CONNECT on database orchestra_ldp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, q := range tt.setup {
				if q == "" {
					err = s.LockDown(ctx, "orchestra_ldp", "orchestra_ldp")
				} else {
					err = s.Exec(ctx, q)
				}
				if err != nil {
					t.Fatalf("%q: %v", q, err)
				}
			}
			problems, err := s.LockDownProblems(ctx, "orchestra_ldp", "orchestra_ldp")
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(problems, "; "); got != tt.want {
				t.Errorf("problems:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
	if _, err := s.LockDownProblems(ctx, "orchestra_nosuch", "orchestra_nosuch"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing database: err = %v", err)
	}
}

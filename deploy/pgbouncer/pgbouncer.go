// Package pgbouncer holds the example PgBouncer configuration for a
// Postgres server with many tenant databases (pgbouncer.ini, embedded as
// Config) and Userlist, which writes PgBouncer's auth_file from the SCRAM
// verifiers the server stores.
package pgbouncer

import (
	_ "embed"
	"fmt"
	"sort"
	"strings"
)

// Config is the example pgbouncer.ini.
//
//go:embed pgbouncer.ini
var Config string

// Userlist returns an auth_file body: one `"role" "verifier"` line per role,
// sorted. verifiers must be what the server stores (pg_authid.rolpassword,
// "SCRAM-SHA-256$..."), so that PgBouncer can log in to the server as the
// role with the client's proof.
func Userlist(verifiers map[string]string) (string, error) {
	roles := make([]string, 0, len(verifiers))
	for r := range verifiers {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	var b strings.Builder
	for _, r := range roles {
		v := verifiers[r]
		if !strings.HasPrefix(v, "SCRAM-SHA-256$") {
			return "", fmt.Errorf("pgbouncer: role %s: not a SCRAM-SHA-256 verifier", r)
		}
		if strings.ContainsAny(r+v, "\"\n") {
			return "", fmt.Errorf("pgbouncer: role %s: quote or newline in role or verifier", r)
		}
		fmt.Fprintf(&b, "%q %q\n", r, v)
	}
	return b.String(), nil
}

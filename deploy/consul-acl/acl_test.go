package consulacl_test

import (
	"strings"
	"testing"

	consulacl "stagesub.dev/deploy/consul-acl"
)

// access returns the access a policy grants to the named resource under the
// Consul rules: an exact rule wins over prefix rules, the longest prefix
// wins among prefixes, and no rule means "deny" (default-deny ACLs).
func access(exact, prefixes []consulacl.Rule, name string) string {
	for _, r := range exact {
		if r.Name == name {
			return r.Policy
		}
	}
	best, got := -1, "deny"
	for _, r := range prefixes {
		if strings.HasPrefix(name, r.Name) && len(r.Name) > best {
			best, got = len(r.Name), r.Policy
		}
	}
	return got
}

func mustPolicy(t *testing.T, role string) *consulacl.Policy {
	t.Helper()
	src, err := consulacl.Source(role)
	if err != nil {
		t.Fatal(err)
	}
	p, err := consulacl.Parse(src)
	if err != nil {
		t.Fatalf("%s: %v", role, err)
	}
	return p
}

func TestLeastPrivilege(t *testing.T) {
	type check struct {
		kind, name, want string
	}
	key := func(name, want string) check { return check{"key", name, want} }
	svc := func(name, want string) check { return check{"service", name, want} }
	session := func(want string) check { return check{"session", "any-node", want} }
	node := func(want string) check { return check{"node", "any-node", want} }
	tests := map[string][]check{
		"router": {
			key("stagesub/tenants/goteborg", "read"),
			key("stagesub/certmagic/certificates/x", "write"),
			key("stagesub/locks/create/goteborg", "deny"),
			key("vault/secret", "deny"),
			svc("stagesub-app", "read"), svc("stagesub-admin", "read"), svc("stagesub-router", "write"),
			svc("postgres", "deny"),
			session("write"), node("read"),
		},
		"app": {
			key("stagesub/tenants/goteborg", "deny"),
			key("stagesub/certmagic/x", "deny"),
			svc("stagesub-app", "write"), svc("stagesub-router", "deny"), svc("stagesub-admin", "deny"),
			session("deny"), node("read"),
		},
		"admin": {
			key("stagesub/tenants/goteborg", "read"),
			key("stagesub/certmagic/x", "deny"),
			svc("stagesub-app", "read"), svc("stagesub-router", "read"), svc("stagesub-admin", "write"),
			session("deny"), node("read"),
		},
		"ops": {
			key("stagesub/tenants/goteborg", "write"),
			key("stagesub/locks/create/goteborg", "write"),
			key("stagesub/certmagic/x", "deny"),
			key("other/key", "deny"),
			svc("stagesub-app", "write"), svc("stagesub-router", "read"), svc("stagesub-admin", "read"),
			svc("consul", "deny"),
			session("write"), node("read"),
		},
	}
	for _, role := range consulacl.Roles {
		t.Run(role, func(t *testing.T) {
			p := mustPolicy(t, role)
			checks, ok := tests[role]
			if !ok {
				t.Fatalf("no least-privilege checks for role %s", role)
			}
			for _, c := range checks {
				var got string
				switch c.kind {
				case "key":
					got = access(p.Keys, p.KeyPrefixes, c.name)
				case "service":
					got = access(p.Services, p.ServicePrefixes, c.name)
				case "session":
					got = access(p.Sessions, p.SessionPrefixes, c.name)
				case "node":
					got = access(p.Nodes, p.NodePrefixes, c.name)
				}
				if got != c.want {
					t.Errorf("%s %q: got %s, want %s", c.kind, c.name, got, c.want)
				}
			}
			if p.ACL != "" || p.Keyring != "" {
				t.Errorf("acl=%q keyring=%q: no StageSub role manages ACLs or the keyring", p.ACL, p.Keyring)
			}
			if len(p.AgentPrefixes)+len(p.Agents)+len(p.EventPrefixes)+len(p.QueryPrefixes) > 0 {
				t.Errorf("agent, event or query rules granted: %+v", p)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := map[string]string{
		"ErrSyntax":       `key_prefix "a" {`,
		"ErrUnknownBlock": `key_prefixx "a" { policy = "read" }`,
		"ErrBadPolicy":    `key_prefix "a" { policy = "readwrite" }`,
		"ErrBadOperator":  `operator = "all"`,
	}
	for name, src := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := consulacl.Parse([]byte(src)); err == nil {
				t.Errorf("Parse(%q): no error", src)
			}
		})
	}
	if _, err := consulacl.Source("nobody"); err == nil {
		t.Error("Source(nobody): no error")
	}
}

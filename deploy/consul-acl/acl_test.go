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
	agent := func(want string) check { return check{"agent", "any-node", want} }
	tests := map[string][]check{
		"router": {
			key("stagesub/tenants/goteborg", "read"),
			key("stagesub/certmagic/certificates/x", "write"),
			key("stagesub/locks/create/goteborg", "deny"),
			key("vault/secret", "deny"),
			svc("stagesub-app", "read"), svc("stagesub-admin", "read"), svc("stagesub-router", "write"),
			svc("postgres", "deny"),
			session("write"), node("read"), agent("deny"),
		},
		"app": {
			key("stagesub/tenants/goteborg", "deny"),
			key("stagesub/certmagic/x", "deny"),
			svc("stagesub-app", "write"), svc("stagesub-router", "deny"), svc("stagesub-admin", "deny"),
			session("deny"), node("read"), agent("deny"),
		},
		"admin": {
			key("stagesub/tenants/goteborg", "read"),
			key("stagesub/certmagic/x", "deny"),
			svc("stagesub-app", "read"), svc("stagesub-router", "read"), svc("stagesub-admin", "write"),
			session("deny"), node("read"), agent("deny"),
		},
		"ops": {
			key("stagesub/tenants/goteborg", "write"),
			key("stagesub/locks/create/goteborg", "write"),
			key("stagesub/certmagic/x", "deny"),
			key("other/key", "deny"),
			svc("stagesub-app", "write"), svc("stagesub-router", "read"), svc("stagesub-admin", "read"),
			svc("consul", "deny"),
			session("write"), node("read"), agent("deny"),
		},
		"prometheus": {
			key("stagesub/tenants/goteborg", "deny"),
			key("stagesub/certmagic/x", "deny"),
			key("stagesub/locks/create/goteborg", "deny"),
			svc("stagesub-app", "read"), svc("stagesub-router", "read"), svc("stagesub-admin", "read"),
			svc("consul", "deny"), svc("postgres", "deny"),
			session("deny"), node("read"), agent("read"),
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
				case "agent":
					got = access(p.Agents, p.AgentPrefixes, c.name)
				}
				if got != c.want {
					t.Errorf("%s %q: got %s, want %s", c.kind, c.name, got, c.want)
				}
			}
			if p.ACL != "" || p.Keyring != "" {
				t.Errorf("acl=%q keyring=%q: no StageSub role manages ACLs or the keyring", p.ACL, p.Keyring)
			}
			if len(p.EventPrefixes)+len(p.Events)+len(p.QueryPrefixes)+len(p.Queries) > 0 {
				t.Errorf("event or query rules granted: %+v", p)
			}
			if p.Operator != "" && role != "ops" {
				t.Errorf("operator = %q: only ops read operator endpoints", p.Operator)
			}
			// Read only: Prometheus and the SD bridge never write anything.
			if role == "prometheus" {
				for _, rs := range [][]consulacl.Rule{p.Keys, p.KeyPrefixes, p.Services, p.ServicePrefixes, p.Nodes,
					p.NodePrefixes, p.Sessions, p.SessionPrefixes, p.Agents, p.AgentPrefixes} {
					for _, r := range rs {
						if r.Policy != "read" {
							t.Errorf("prometheus rule %q: policy %s, want read", r.Name, r.Policy)
						}
					}
				}
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

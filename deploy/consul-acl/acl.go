// Package consulacl holds StageSub's Consul ACL policies (one HCL file per
// role: router, app, admin, ops, prometheus), embedded so stagesubctl can install them,
// and a parser for the subset of Consul's policy language they use.
//
// Invariant, checked by the tests: every role gets the least privilege it
// needs. Only ops write tenant records; only the router writes certificates;
// an app instance can register stagesub-app and read no KV at all;
// Prometheus only reads StageSub services, nodes and the agent.
package consulacl

import (
	"embed"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
)

//go:embed *.hcl
var files embed.FS

// Roles lists the policies, one per HCL file: "<role>.hcl". prometheus is
// the read-only policy of Prometheus' consul_sd (and the HTTP SD bridge).
var Roles = []string{"admin", "app", "ops", "prometheus", "router"}

// Rule grants Policy ("read", "write", "list" or "deny") on a named
// resource or on every resource whose name starts with Name (prefix rules).
type Rule struct {
	Name   string `hcl:",key"`
	Policy string `hcl:"policy"`
}

// Policy is the parsed form of one policy file, mirroring the block names of
// Consul's ACL rules language.
type Policy struct {
	Keys            []Rule `hcl:"key,expand"`
	KeyPrefixes     []Rule `hcl:"key_prefix,expand"`
	Services        []Rule `hcl:"service,expand"`
	ServicePrefixes []Rule `hcl:"service_prefix,expand"`
	Nodes           []Rule `hcl:"node,expand"`
	NodePrefixes    []Rule `hcl:"node_prefix,expand"`
	Sessions        []Rule `hcl:"session,expand"`
	SessionPrefixes []Rule `hcl:"session_prefix,expand"`
	Agents          []Rule `hcl:"agent,expand"`
	AgentPrefixes   []Rule `hcl:"agent_prefix,expand"`
	Events          []Rule `hcl:"event,expand"`
	EventPrefixes   []Rule `hcl:"event_prefix,expand"`
	Queries         []Rule `hcl:"query,expand"`
	QueryPrefixes   []Rule `hcl:"query_prefix,expand"`
	Operator        string `hcl:"operator"`
	ACL             string `hcl:"acl"`
	Keyring         string `hcl:"keyring"`
	Mesh            string `hcl:"mesh"`
}

// Source returns the HCL text of role's policy.
func Source(role string) ([]byte, error) {
	b, err := files.ReadFile(role + ".hcl")
	if err != nil {
		return nil, fmt.Errorf("consulacl: no policy for role %q", role)
	}
	return b, nil
}

// Parse parses one policy. Unknown block names are an error, so a typo can
// never silently drop a rule.
func Parse(src []byte) (*Policy, error) {
	root, err := hcl.ParseBytes(src)
	if err != nil {
		return nil, fmt.Errorf("consulacl: parse: %w", err)
	}
	known := map[string]bool{
		"key": true, "key_prefix": true, "service": true, "service_prefix": true,
		"node": true, "node_prefix": true, "session": true, "session_prefix": true,
		"agent": true, "agent_prefix": true, "event": true, "event_prefix": true,
		"query": true, "query_prefix": true, "operator": true, "acl": true,
		"keyring": true, "mesh": true,
	}
	list, ok := root.Node.(*ast.ObjectList)
	if !ok {
		return nil, fmt.Errorf("consulacl: policy is not an HCL object list")
	}
	var unknown []string
	for _, item := range list.Items {
		if len(item.Keys) == 0 {
			continue
		}
		if k := strings.Trim(item.Keys[0].Token.Text, `"`); !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("consulacl: unknown rule blocks %s", strings.Join(unknown, ", "))
	}
	var p Policy
	if err := hcl.DecodeObject(&p, root); err != nil {
		return nil, fmt.Errorf("consulacl: decode: %w", err)
	}
	for _, rs := range [][]Rule{p.Keys, p.KeyPrefixes, p.Services, p.ServicePrefixes, p.Nodes,
		p.NodePrefixes, p.Sessions, p.SessionPrefixes, p.Agents, p.AgentPrefixes, p.Events,
		p.EventPrefixes, p.Queries, p.QueryPrefixes} {
		for _, r := range rs {
			if !validAccess(r.Policy) {
				return nil, fmt.Errorf("consulacl: rule %q: invalid policy %q", r.Name, r.Policy)
			}
		}
	}
	for _, s := range []string{p.Operator, p.ACL, p.Keyring, p.Mesh} {
		if s != "" && !validAccess(s) {
			return nil, fmt.Errorf("consulacl: invalid policy %q", s)
		}
	}
	return &p, nil
}

func validAccess(s string) bool {
	switch s {
	case "read", "write", "list", "deny":
		return true
	}
	return false
}

package consuldev

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/consul/api"
)

// TestState_DerivedIndexesStayInStep applies a long random sequence of
// catalog writes (services moving between names, checks moving between
// services and to node level, deletes of services, checks and whole nodes)
// and checks after every step that checksBySvc, svcCount and entryJSON
// equal what they would be if rebuilt from Services and Checks alone.
func TestState_DerivedIndexesStayInStep(t *testing.T) {
	st := newState()
	rng := rand.New(rand.NewPCG(1, 2))
	nodes := []string{"n1", "n2", "n3"}
	names := []string{"web", "db", "cache"}
	for step := range 5000 {
		idx := st.next()
		node := nodes[rng.IntN(len(nodes))]
		sid := fmt.Sprintf("s%d", rng.IntN(6))
		switch op := rng.IntN(7); op {
		case 0:
			st.ensureNode(idx, &api.Node{Node: node, Address: fmt.Sprintf("10.0.0.%d", rng.IntN(3)), TaggedAddresses: map[string]string{}, Meta: map[string]string{}})
		case 1, 2:
			if st.Nodes[node] == nil {
				continue
			}
			st.ensureService(idx, node, &api.AgentService{ID: sid, Service: names[rng.IntN(len(names))], Tags: []string{fmt.Sprint(rng.IntN(2))}, Meta: map[string]string{}})
		case 3:
			c := &api.HealthCheck{Node: node, CheckID: fmt.Sprintf("c%d", rng.IntN(8)), Status: []string{api.HealthPassing, api.HealthCritical}[rng.IntN(2)]}
			if rng.IntN(3) > 0 {
				if st.Services[node][sid] == nil {
					continue
				}
				c.ServiceID = sid
			}
			st.ensureCheck(idx, c)
		case 4:
			st.deleteService(idx, node, sid)
		case 5:
			st.deleteCheck(idx, node, fmt.Sprintf("c%d", rng.IntN(8)))
		case 6:
			if rng.IntN(10) == 0 {
				st.deleteNode(idx, node)
			}
		}
		// Fill the entry cache for some instances, as reads do.
		for n, svcs := range st.Services {
			for _, svc := range svcs {
				if rng.IntN(4) == 0 {
					if _, err := st.storeEntry(st.Nodes[n], svc, &api.ServiceEntry{}); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		checkDerived(t, step, st)
	}
}

func checkDerived(t *testing.T, step int, st *state) {
	t.Helper()
	fresh := &state{Services: st.Services, Checks: st.Checks}
	fresh.fixup()
	if len(st.checksBySvc) != len(fresh.checksBySvc) {
		t.Fatalf("step %d: checksBySvc has %d nodes, want %d", step, len(st.checksBySvc), len(fresh.checksBySvc))
	}
	for node, bySvc := range fresh.checksBySvc {
		if len(st.checksBySvc[node]) != len(bySvc) {
			t.Fatalf("step %d: node %s: %d services with checks, want %d", step, node, len(st.checksBySvc[node]), len(bySvc))
		}
		for sid, m := range bySvc {
			if !maps.Equal(st.checksBySvc[node][sid], m) {
				t.Fatalf("step %d: checks of %s/%q = %v, want %v", step, node, sid, st.checksBySvc[node][sid], m)
			}
		}
	}
	for name, n := range fresh.svcCount {
		if st.svcCount[name] != n {
			t.Fatalf("step %d: svcCount[%s] = %d, want %d", step, name, st.svcCount[name], n)
		}
	}
	for name, n := range st.svcCount {
		if n != fresh.svcCount[name] {
			t.Fatalf("step %d: svcCount[%s] = %d, want %d", step, name, n, fresh.svcCount[name])
		}
	}
	for k := range st.entryJSON {
		if st.Services[k.node][k.serviceID] == nil {
			t.Fatalf("step %d: cached entry %v outlives its service", step, k)
		}
	}
}

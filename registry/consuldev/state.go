package consuldev

import (
	"sort"
	"time"

	"github.com/hashicorp/consul/api"
)

// Index table names, as in Consul's state store.
const (
	tKVS        = "kvs"
	tTombstones = "tombstones"
	tSessions   = "sessions"
	tNodes      = "nodes"
	tServices   = "services"
	tChecks     = "checks"
	tExtinction = "service_extinction"
)

// kvEntry is a stored KV pair. Its JSON form is Consul's DirEntry.
type kvEntry struct {
	LockIndex   uint64
	Key         string
	Flags       uint64
	Value       []byte
	Session     string `json:",omitempty"`
	CreateIndex uint64
	ModifyIndex uint64
}

// session is a stored session (Consul's structs.Session).
type session struct {
	ID            string
	Name          string
	Node          string
	LockDelay     time.Duration
	Behavior      string
	TTL           string
	NodeChecks    []string
	ServiceChecks []serviceCheck
	Checks        []string `json:",omitempty"`
	CreateIndex   uint64
	ModifyIndex   uint64
}

type serviceCheck struct {
	ID        string
	Namespace string
}

// state is the replicated-state part of the server (what Consul keeps in
// its Raft FSM). It is persisted as a whole. Guarded by Server.mu.
type state struct {
	Index      uint64
	Tables     map[string]uint64
	KV         map[string]*kvEntry
	Tombstones map[string]uint64
	Sessions   map[string]*session
	Nodes      map[string]*api.Node
	Services   map[string]map[string]*api.AgentService // node -> service ID
	Checks     map[string]map[string]*api.HealthCheck  // node -> check ID

	// checksBySvc indexes Checks by service: node -> service ID ("" for
	// node-level checks) -> check ID -> the same *api.HealthCheck as in
	// Checks. svcCount counts the instances in Services by service name.
	// Both are derived (never persisted): rebuilt by fixup and kept in step
	// by the catalog primitives below, which are the only writers of
	// Services and Checks. Invariant: a check is in checksBySvc exactly when
	// it is in Checks, under its current Node and ServiceID.
	checksBySvc map[string]map[string]map[string]*api.HealthCheck
	svcCount    map[string]int
	// entryJSON caches the encoded /v1/health/service entry of each
	// instance (see encodedEntry for when one is valid). deleteService and
	// deleteNode drop the entries of what they remove. It relies on this
	// invariant of the primitives below: a stored node, service or check is
	// either replaced by a new object or, when changed in place (a check's
	// service name and tags in ensureService), given the write's new
	// ModifyIndex.
	entryJSON map[entryKey]*encodedEntry

	// lockDelay holds keys in a lock-delay window (leader memory only).
	lockDelay map[string]time.Time
	// sessionTimers are the TTL timers of sessions with a TTL.
	sessionTimers map[string]*time.Timer
	// sessionDeadline is when each TTL session expires.
	sessionDeadline map[string]time.Time
}

func newState() *state {
	st := &state{}
	st.fixup()
	return st
}

// fixup initialises nil maps (after decoding a snapshot).
func (st *state) fixup() {
	if st.Tables == nil {
		st.Tables = map[string]uint64{}
	}
	if st.KV == nil {
		st.KV = map[string]*kvEntry{}
	}
	if st.Tombstones == nil {
		st.Tombstones = map[string]uint64{}
	}
	if st.Sessions == nil {
		st.Sessions = map[string]*session{}
	}
	if st.Nodes == nil {
		st.Nodes = map[string]*api.Node{}
	}
	if st.Services == nil {
		st.Services = map[string]map[string]*api.AgentService{}
	}
	if st.Checks == nil {
		st.Checks = map[string]map[string]*api.HealthCheck{}
	}
	st.checksBySvc = map[string]map[string]map[string]*api.HealthCheck{}
	for _, m := range st.Checks {
		for _, c := range m {
			st.indexCheck(c)
		}
	}
	st.entryJSON = map[entryKey]*encodedEntry{}
	st.svcCount = map[string]int{}
	for _, m := range st.Services {
		for _, svc := range m {
			st.svcCount[svc.Service]++
		}
	}
	st.lockDelay = map[string]time.Time{}
	st.sessionTimers = map[string]*time.Timer{}
	st.sessionDeadline = map[string]time.Time{}
}

// next allocates the next index for a write.
func (st *state) next() uint64 {
	st.Index++
	return st.Index
}

// touch records that table(s) changed at idx.
func (st *state) touch(idx uint64, tables ...string) {
	for _, t := range tables {
		if st.Tables[t] < idx {
			st.Tables[t] = idx
		}
	}
}

func (st *state) maxIndex(tables ...string) uint64 {
	var m uint64
	for _, t := range tables {
		if v := st.Tables[t]; v > m {
			m = v
		}
	}
	return m
}

func serviceTable(name string) string { return "service." + name }

// ---- catalog primitives ----

// sortedNodeNames returns node names in byte order.
func (st *state) sortedNodeNames() []string {
	names := make([]string, 0, len(st.Nodes))
	for n := range st.Nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// touchNodeServices bumps the per-service index of every service on node.
func (st *state) touchNodeServices(idx uint64, node string) {
	for _, svc := range st.Services[node] {
		st.touch(idx, serviceTable(svc.Service))
	}
}

// ensureNode creates or updates a node. It reports whether anything changed.
func (st *state) ensureNode(idx uint64, n *api.Node) bool {
	old := st.Nodes[n.Node]
	if old != nil {
		cp := *n
		cp.CreateIndex, cp.ModifyIndex = old.CreateIndex, old.ModifyIndex
		if nodeEqual(old, &cp) {
			return false
		}
		n.CreateIndex = old.CreateIndex
	} else {
		n.CreateIndex = idx
	}
	n.ModifyIndex = idx
	st.Nodes[n.Node] = n
	st.touch(idx, tNodes)
	st.touchNodeServices(idx, n.Node)
	return true
}

// ensureService creates or updates a service instance on node.
func (st *state) ensureService(idx uint64, node string, svc *api.AgentService) bool {
	m := st.Services[node]
	if m == nil {
		m = map[string]*api.AgentService{}
		st.Services[node] = m
	}
	old := m[svc.ID]
	if old != nil {
		cp := *svc
		cp.CreateIndex, cp.ModifyIndex = old.CreateIndex, old.ModifyIndex
		if jsonEqual(old, &cp) {
			return false
		}
		svc.CreateIndex = old.CreateIndex
		if old.Service != svc.Service {
			st.touch(idx, serviceTable(old.Service))
			st.svcCount[old.Service]--
			st.svcCount[svc.Service]++
		}
	} else {
		svc.CreateIndex = idx
		st.svcCount[svc.Service]++
	}
	svc.ModifyIndex = idx
	m[svc.ID] = svc
	st.touch(idx, tServices, serviceTable(svc.Service))
	// Checks of this service carry the service name and tags.
	for _, c := range st.checksBySvc[node][svc.ID] {
		if c.ServiceName != svc.Service || !stringsEqual(c.ServiceTags, svc.Tags) {
			c.ServiceName = svc.Service
			c.ServiceTags = nonNil(svc.Tags)
			c.ModifyIndex = idx
			st.touch(idx, tChecks)
		}
	}
	if old != nil && old.Service != svc.Service {
		st.maybeExtinct(idx, old.Service)
	}
	return true
}

// serviceExists reports whether any instance of name is registered.
func (st *state) serviceExists(name string) bool { return st.svcCount[name] > 0 }

func (st *state) maybeExtinct(idx uint64, name string) {
	if !st.serviceExists(name) {
		delete(st.svcCount, name)
		delete(st.Tables, serviceTable(name))
		st.touch(idx, tExtinction)
	}
}

// deleteService removes a service instance and its checks. It returns the
// IDs of the removed checks.
func (st *state) deleteService(idx uint64, node, id string) (removedChecks []string, ok bool) {
	svc := st.Services[node][id]
	if svc == nil {
		return nil, false
	}
	for cid, c := range st.checksBySvc[node][id] {
		delete(st.Checks[node], cid)
		st.unindexCheck(c)
		removedChecks = append(removedChecks, cid)
	}
	if len(removedChecks) > 0 {
		st.touch(idx, tChecks)
	}
	delete(st.Services[node], id)
	delete(st.entryJSON, entryKey{node, id})
	st.svcCount[svc.Service]--
	st.touch(idx, tServices, serviceTable(svc.Service))
	st.maybeExtinct(idx, svc.Service)
	return removedChecks, true
}

// ensureCheck creates or updates a check. It reports whether anything
// changed. The caller invalidates sessions when the check is critical.
func (st *state) ensureCheck(idx uint64, c *api.HealthCheck) bool {
	m := st.Checks[c.Node]
	if m == nil {
		m = map[string]*api.HealthCheck{}
		st.Checks[c.Node] = m
	}
	if c.ServiceID != "" {
		if svc := st.Services[c.Node][c.ServiceID]; svc != nil {
			c.ServiceName = svc.Service
			c.ServiceTags = nonNil(svc.Tags)
		}
	}
	c.ServiceTags = nonNil(c.ServiceTags)
	old := m[c.CheckID]
	if old != nil {
		cp := *c
		cp.CreateIndex, cp.ModifyIndex = old.CreateIndex, old.ModifyIndex
		if jsonEqual(old, &cp) {
			return false
		}
		c.CreateIndex = old.CreateIndex
		st.unindexCheck(old)
	} else {
		c.CreateIndex = idx
	}
	c.ModifyIndex = idx
	m[c.CheckID] = c
	st.indexCheck(c)
	st.touch(idx, tChecks)
	if c.ServiceID != "" {
		if c.ServiceName != "" {
			st.touch(idx, serviceTable(c.ServiceName))
		}
	} else {
		st.touchNodeServices(idx, c.Node)
	}
	return true
}

// deleteCheck removes a check; it reports whether it existed.
func (st *state) deleteCheck(idx uint64, node, id string) bool {
	c := st.Checks[node][id]
	if c == nil {
		return false
	}
	delete(st.Checks[node], id)
	st.unindexCheck(c)
	st.touch(idx, tChecks)
	if c.ServiceID != "" {
		st.touch(idx, serviceTable(c.ServiceName))
	} else {
		st.touchNodeServices(idx, node)
	}
	return true
}

// deleteNode removes a node with its services and checks.
func (st *state) deleteNode(idx uint64, node string) bool {
	if st.Nodes[node] == nil {
		return false
	}
	for id := range st.Services[node] {
		st.deleteService(idx, node, id)
	}
	for id := range st.Checks[node] {
		st.deleteCheck(idx, node, id)
	}
	delete(st.Services, node)
	delete(st.Checks, node)
	delete(st.checksBySvc, node)
	delete(st.Nodes, node)
	st.touch(idx, tNodes)
	return true
}

// indexCheck adds c to checksBySvc under its Node and ServiceID.
func (st *state) indexCheck(c *api.HealthCheck) {
	bySvc := st.checksBySvc[c.Node]
	if bySvc == nil {
		bySvc = map[string]map[string]*api.HealthCheck{}
		st.checksBySvc[c.Node] = bySvc
	}
	m := bySvc[c.ServiceID]
	if m == nil {
		m = map[string]*api.HealthCheck{}
		bySvc[c.ServiceID] = m
	}
	m[c.CheckID] = c
}

// unindexCheck removes c (as stored: same Node, ServiceID and CheckID)
// from checksBySvc, dropping empty maps.
func (st *state) unindexCheck(c *api.HealthCheck) {
	bySvc := st.checksBySvc[c.Node]
	m := bySvc[c.ServiceID]
	delete(m, c.CheckID)
	if len(m) == 0 {
		delete(bySvc, c.ServiceID)
	}
	if len(bySvc) == 0 {
		delete(st.checksBySvc, c.Node)
	}
}

// serviceIndex is the index reported by service-scoped catalog and health
// queries (Consul's maxIndexAndWatchChForService).
func (st *state) serviceIndex(name string, withChecks bool) uint64 {
	if st.serviceExists(name) {
		if v, ok := st.Tables[serviceTable(name)]; ok && v > 0 {
			return v
		}
	} else if v := st.Tables[tExtinction]; v > 0 {
		return v
	}
	if withChecks {
		return st.maxIndex(tNodes, tServices, tChecks)
	}
	return st.maxIndex(tNodes, tServices)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func stringsEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func nodeEqual(a, b *api.Node) bool { return jsonEqual(a, b) }

package consuldev

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
)

// registerSelf puts this agent's node, its serfHealth check and the
// "consul" service into the catalog, as Consul's leader does for a live
// server member. Caller holds s.mu.
func (s *Server) registerSelf() {
	idx := s.st.next()
	addr := s.nodeAddr()
	meta := map[string]string{
		"consul-network-segment": "",
		"consul-version":         Version,
	}
	for k, v := range s.cfg.NodeMeta {
		meta[k] = v
	}
	n := &api.Node{
		ID:         s.nodeID,
		Node:       s.cfg.NodeName,
		Address:    addr,
		Datacenter: s.cfg.Datacenter,
		TaggedAddresses: map[string]string{
			"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr,
		},
		Meta: meta,
	}
	s.st.ensureNode(idx, n)
	s.st.ensureService(idx, s.cfg.NodeName, &api.AgentService{
		ID:      "consul",
		Service: "consul",
		Tags:    []string{},
		Port:    s.cfg.ServerPort,
		Meta: map[string]string{
			"raft_version":          "3",
			"serf_protocol_current": "2",
			"serf_protocol_min":     "1",
			"serf_protocol_max":     "5",
			"version":               Version,
			"non_voter":             "false",
			"read_replica":          "false",
		},
		Weights:    api.AgentWeights{Passing: 1, Warning: 1},
		Datacenter: s.cfg.Datacenter,
	})
	s.st.ensureCheck(idx, &api.HealthCheck{
		Node:        s.cfg.NodeName,
		CheckID:     serfCheckID,
		Name:        "Serf Health Status",
		Status:      api.HealthPassing,
		Output:      "Agent alive and reachable",
		ServiceTags: []string{},
	})
}

// ---- catalog rows ----

func (s *Server) catalogRow(n *api.Node, svc *api.AgentService) *api.CatalogService {
	return &api.CatalogService{
		ID:                       n.ID,
		Node:                     n.Node,
		Address:                  n.Address,
		Datacenter:               n.Datacenter,
		TaggedAddresses:          n.TaggedAddresses,
		NodeMeta:                 n.Meta,
		ServiceID:                svc.ID,
		ServiceName:              svc.Service,
		ServiceAddress:           svc.Address,
		ServiceTaggedAddresses:   svc.TaggedAddresses,
		ServiceTags:              nonNil(svc.Tags),
		ServiceMeta:              svc.Meta,
		ServicePort:              svc.Port,
		ServiceWeights:           api.Weights(svc.Weights),
		ServiceEnableTagOverride: svc.EnableTagOverride,
		ServiceProxy:             svc.Proxy,
		ServiceLocality:          svc.Locality,
		CreateIndex:              svc.CreateIndex,
		ModifyIndex:              svc.ModifyIndex,
	}
}

// serviceInstances returns (node, service) pairs of name ordered by node
// name and service ID. Caller holds s.mu.
func (s *Server) serviceInstances(name string, o *queryOpts) [][2]any {
	var out [][2]any
	for _, node := range s.st.sortedNodeNames() {
		n := s.st.Nodes[node]
		if !o.metaMatch(n.Meta) {
			continue
		}
		ids := make([]string, 0)
		for id, svc := range s.st.Services[node] {
			if svc.Service == name {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		for _, id := range ids {
			out = append(out, [2]any{n, s.st.Services[node][id]})
		}
	}
	return out
}

func hasTags(have []string, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if strings.EqualFold(h, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// checksOf returns copies of the checks of node in CheckID order: all of
// them when serviceID is nil, else those of that one service ID ("" =
// node-level checks). With a service ID it costs O(checks of that service),
// through the checksBySvc index. Caller holds s.mu.
func (s *Server) checksOf(node string, serviceID *string) []*api.HealthCheck {
	src := s.st.Checks[node]
	if serviceID != nil {
		src = s.st.checksBySvc[node][*serviceID]
	}
	var out []*api.HealthCheck // nil when there are none, as before the index
	for _, c := range src {
		cp := *c
		cp.ServiceTags = nonNil(cp.ServiceTags)
		out = append(out, &cp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CheckID < out[j].CheckID })
	return out
}

func copyNode(n *api.Node) *api.Node {
	cp := *n
	return &cp
}

func copyService(svc *api.AgentService) *api.AgentService {
	cp := *svc
	cp.Tags = nonNil(cp.Tags)
	return &cp
}

// ---- catalog endpoints ----

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func (s *Server) catalogRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var reg api.CatalogRegistration
	if err := decodeBody(r, &reg); err != nil {
		return nil, err
	}
	if reg.Datacenter != "" && reg.Datacenter != s.cfg.Datacenter {
		return nil, errf(500, "No path to datacenter")
	}
	if reg.Node == "" {
		return nil, fmt.Errorf("Must provide node")
	}
	if reg.Address == "" && !reg.SkipNodeUpdate {
		return nil, fmt.Errorf("Must provide address if SkipNodeUpdate is not set")
	}
	if reg.ID != "" && !uuidRE.MatchString(reg.ID) {
		return nil, fmt.Errorf("Bad node ID: %s", reg.ID)
	}
	if reg.Service != nil {
		if reg.Service.ID == "" && reg.Service.Service != "" {
			reg.Service.ID = reg.Service.Service
		}
		if reg.Service.Service == "" {
			return nil, fmt.Errorf("Must provide service name (Service.Service) with valid ID")
		}
	}
	checks := append([]*api.HealthCheck{}, reg.Checks...)
	if reg.Check != nil {
		c := reg.Check
		checks = append([]*api.HealthCheck{{
			Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes,
			Output: c.Output, ServiceID: c.ServiceID, ServiceName: c.ServiceName, Type: c.Type,
			ExposedPort: c.ExposedPort, Definition: c.Definition,
		}}, checks...)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	// Like Consul, SkipNodeUpdate only skips updating an existing node; a
	// missing node is created (possibly without address).
	exists := s.st.Nodes[reg.Node] != nil
	idx := s.st.Index + 1
	changed := false
	if !reg.SkipNodeUpdate || !exists {
		n := &api.Node{
			ID:              strings.ToLower(reg.ID),
			Node:            reg.Node,
			Address:         reg.Address,
			Datacenter:      s.cfg.Datacenter,
			TaggedAddresses: reg.TaggedAddresses,
			Meta:            reg.NodeMeta,
			Locality:        reg.Locality,
		}
		if n.TaggedAddresses == nil {
			n.TaggedAddresses = map[string]string{}
		}
		if n.Meta == nil {
			n.Meta = map[string]string{}
		}
		changed = s.st.ensureNode(idx, n) || changed
	}
	if reg.Service != nil {
		svc := *reg.Service
		svc.Tags = nonNil(svc.Tags)
		if svc.Meta == nil {
			svc.Meta = map[string]string{}
		}
		if svc.Weights.Passing == 0 && svc.Weights.Warning == 0 {
			svc.Weights = api.AgentWeights{Passing: 1, Warning: 1}
		}
		svc.Datacenter = ""
		svc.CreateIndex, svc.ModifyIndex = 0, 0
		changed = s.st.ensureService(idx, reg.Node, &svc) || changed
	}
	for _, c := range checks {
		cp := *c
		if cp.Node == "" {
			cp.Node = reg.Node
		}
		if cp.Node != reg.Node {
			return nil, fmt.Errorf("Node ID mismatch for check %q", cp.CheckID)
		}
		if cp.Status == "" {
			cp.Status = api.HealthCritical
		}
		if cp.ServiceID != "" && s.st.Services[reg.Node][cp.ServiceID] == nil {
			return nil, fmt.Errorf("Missing service registration")
		}
		cp.CreateIndex, cp.ModifyIndex = 0, 0
		if s.st.ensureCheck(idx, &cp) {
			changed = true
			if cp.Status == api.HealthCritical {
				s.invalidateSessionsForCheck(idx, cp.Node, cp.CheckID)
			}
		}
	}
	if changed {
		s.st.Index = idx
		s.commit()
	}
	return true, nil
}

func (s *Server) catalogDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	var dereg api.CatalogDeregistration
	if err := decodeBody(r, &dereg); err != nil {
		return nil, err
	}
	if dereg.Node == "" {
		return nil, fmt.Errorf("Must provide node")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.st.Index + 1
	changed := false
	switch {
	case dereg.ServiceID != "":
		removed, ok := s.st.deleteService(idx, dereg.Node, dereg.ServiceID)
		changed = ok
		for _, cid := range removed {
			s.invalidateSessionsForCheck(idx, dereg.Node, cid)
		}
	case dereg.CheckID != "":
		if s.st.deleteCheck(idx, dereg.Node, dereg.CheckID) {
			changed = true
			s.invalidateSessionsForCheck(idx, dereg.Node, dereg.CheckID)
		}
	default:
		if s.st.Nodes[dereg.Node] != nil {
			s.invalidateSessionsForNode(idx, dereg.Node)
			changed = s.st.deleteNode(idx, dereg.Node)
		}
	}
	if changed {
		s.st.Index = idx
		s.commit()
	}
	return true, nil
}

func (s *Server) catalogDatacenters(w http.ResponseWriter, r *http.Request) (any, error) {
	return []string{s.cfg.Datacenter}, nil
}

// readList answers a catalog or health read whose result is a list or map:
// it parses r's query options and runs build (under s.mu, see blockingRead)
// whenever the answer is due.
func readList[T any](s *Server, w http.ResponseWriter, r *http.Request, index func() uint64, build func(o *queryOpts) (T, error)) (any, error) {
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	var out T
	err = s.blockingRead(w, r, o, index, func() (err error) {
		out, err = build(o)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Server) catalogNodes(w http.ResponseWriter, r *http.Request) (any, error) {
	index := func() uint64 { return s.st.maxIndex(tNodes) }
	return readList(s, w, r, index, func(o *queryOpts) ([]*api.Node, error) {
		out := []*api.Node{}
		for _, name := range s.st.sortedNodeNames() {
			n := s.st.Nodes[name]
			if !o.metaMatch(n.Meta) {
				continue
			}
			if err := appendMatch(o, &out, copyNode(n)); err != nil {
				return nil, err
			}
		}
		return out, nil
	})
}

// nodeServices reads a node and its services; nil when the node is unknown.
func (s *Server) nodeServices(w http.ResponseWriter, r *http.Request, node string) (*api.Node, []*api.AgentService, error) {
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, nil, err
	}
	var n *api.Node
	var svcs []*api.AgentService
	index := func() uint64 { return s.st.maxIndex(tNodes, tServices) }
	err = s.blockingRead(w, r, o, index, func() error {
		n, svcs = nil, nil
		if cur := s.st.Nodes[node]; cur != nil {
			n = copyNode(cur)
			ids := make([]string, 0)
			for id := range s.st.Services[node] {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			for _, id := range ids {
				svc := copyService(s.st.Services[node][id])
				if err := appendMatch(o, &svcs, svc); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return n, svcs, nil
}

func (s *Server) catalogNode(w http.ResponseWriter, r *http.Request) (any, error) {
	node := strings.TrimPrefix(r.URL.Path, "/v1/catalog/node/")
	if node == "" {
		return nil, errf(400, "Missing node name")
	}
	n, svcs, err := s.nodeServices(w, r, node)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return json.RawMessage("null"), nil
	}
	m := map[string]*api.AgentService{}
	for _, svc := range svcs {
		m[svc.ID] = svc
	}
	return &api.CatalogNode{Node: n, Services: m}, nil
}

func (s *Server) catalogNodeServices(w http.ResponseWriter, r *http.Request) (any, error) {
	node := strings.TrimPrefix(r.URL.Path, "/v1/catalog/node-services/")
	if node == "" {
		return nil, errf(400, "Missing node name")
	}
	n, svcs, err := s.nodeServices(w, r, node)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return json.RawMessage("null"), nil
	}
	if svcs == nil {
		svcs = []*api.AgentService{}
	}
	return &api.CatalogNodeServiceList{Node: n, Services: svcs}, nil
}

func (s *Server) catalogServices(w http.ResponseWriter, r *http.Request) (any, error) {
	index := func() uint64 { return s.st.maxIndex(tServices) }
	return readList(s, w, r, index, func(o *queryOpts) (map[string][]string, error) {
		out := map[string][]string{}
		seen := map[string]map[string]bool{}
		for _, node := range s.st.sortedNodeNames() {
			n := s.st.Nodes[node]
			if !o.metaMatch(n.Meta) {
				continue
			}
			for _, svc := range s.st.Services[node] {
				if o.filter != nil {
					ok, err := o.match(s.catalogRow(n, svc))
					if err != nil {
						return nil, err
					}
					if !ok {
						continue
					}
				}
				if _, ok := out[svc.Service]; !ok {
					out[svc.Service] = []string{}
					seen[svc.Service] = map[string]bool{}
				}
				for _, t := range svc.Tags {
					if !seen[svc.Service][t] {
						seen[svc.Service][t] = true
						out[svc.Service] = append(out[svc.Service], t)
					}
				}
			}
		}
		return out, nil
	})
}

func (s *Server) catalogService(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/catalog/service/")
	if name == "" {
		return nil, errf(400, "Missing service name")
	}
	tags := r.URL.Query()["tag"]
	index := func() uint64 { return s.st.serviceIndex(name, false) }
	return readList(s, w, r, index, func(o *queryOpts) ([]*api.CatalogService, error) {
		out := []*api.CatalogService{}
		for _, pair := range s.serviceInstances(name, o) {
			n, svc := pair[0].(*api.Node), pair[1].(*api.AgentService)
			if !hasTags(svc.Tags, tags) {
				continue
			}
			row := s.catalogRow(copyNode(n), copyService(svc))
			if err := appendMatch(o, &out, row); err != nil {
				return nil, err
			}
		}
		return out, nil
	})
}

// ---- health endpoints ----

func (s *Server) healthService(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/health/service/")
	if name == "" {
		return nil, errf(400, "Missing service name")
	}
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	passing, err := queryBool(q, "passing")
	if err != nil {
		return nil, errf(400, "Invalid value for ?passing")
	}
	tags := q["tag"]
	_, pretty := q["pretty"]
	// Unless pretty-printing, the answer is assembled from the cached JSON
	// of each entry (see encodedEntry); an entry is copied and encoded only
	// when it changed, or copied when a filter has to see it.
	var out []*api.ServiceEntry // when pretty
	var raw jsonArray           // otherwise
	index := func() uint64 { return s.st.serviceIndex(name, true) }
	err = s.blockingRead(w, r, o, index, func() error {
		out, raw = []*api.ServiceEntry{}, jsonArray{}
		for _, pair := range s.serviceInstances(name, o) {
			n, svc := pair[0].(*api.Node), pair[1].(*api.AgentService)
			if !hasTags(svc.Tags, tags) {
				continue
			}
			var cached []byte
			if !pretty {
				cached = s.st.cachedEntry(n, svc)
			}
			if cached == nil || o.filter != nil {
				noSvc := ""
				checks := append(s.checksOf(n.Node, &noSvc), s.checksOf(n.Node, &svc.ID)...)
				e := &api.ServiceEntry{Node: copyNode(n), Service: copyService(svc), Checks: checks}
				ok, err := o.match(e)
				if err != nil {
					return err
				}
				if !ok || (passing && !s.st.allPassing(n.Node, svc.ID)) {
					continue
				}
				if pretty {
					out = append(out, e)
					continue
				}
				if cached == nil {
					if cached, err = s.st.storeEntry(n, svc, e); err != nil {
						return err
					}
				}
			} else if passing && !s.st.allPassing(n.Node, svc.ID) {
				continue
			}
			raw = append(raw, cached)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if pretty {
		return out, nil
	}
	return raw, nil
}

// allPassing reports whether every check of the instance serviceID on
// node, node-level checks included, is passing (true when it has none),
// which is what ?passing keeps. Caller holds s.mu.
func (st *state) allPassing(node, serviceID string) bool {
	bySvc := st.checksBySvc[node]
	for _, id := range []string{"", serviceID} {
		for _, c := range bySvc[id] {
			if c.Status != api.HealthPassing {
				return false
			}
		}
	}
	return true
}

func (s *Server) healthChecksQuery(w http.ResponseWriter, r *http.Request, index func() uint64, pick func(*api.HealthCheck) bool) (any, error) {
	return readList(s, w, r, index, func(o *queryOpts) ([]*api.HealthCheck, error) {
		out := []*api.HealthCheck{}
		for _, node := range s.st.sortedNodeNames() {
			if !o.metaMatch(s.st.Nodes[node].Meta) {
				continue
			}
			for _, c := range s.checksOf(node, nil) {
				if !pick(c) {
					continue
				}
				if err := appendMatch(o, &out, c); err != nil {
					return nil, err
				}
			}
		}
		return out, nil
	})
}

func (s *Server) healthChecks(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/health/checks/")
	if name == "" {
		return nil, errf(400, "Missing service name")
	}
	return s.healthChecksQuery(w, r,
		func() uint64 { return s.st.serviceIndex(name, true) },
		func(c *api.HealthCheck) bool { return c.ServiceName == name })
}

func (s *Server) healthNode(w http.ResponseWriter, r *http.Request) (any, error) {
	node := strings.TrimPrefix(r.URL.Path, "/v1/health/node/")
	if node == "" {
		return nil, errf(400, "Missing node name")
	}
	return s.healthChecksQuery(w, r,
		func() uint64 { return s.st.maxIndex(tChecks) },
		func(c *api.HealthCheck) bool { return c.Node == node })
}

func (s *Server) healthState(w http.ResponseWriter, r *http.Request) (any, error) {
	state := strings.TrimPrefix(r.URL.Path, "/v1/health/state/")
	switch state {
	case "":
		return nil, errf(400, "Missing check state")
	case "any", api.HealthPassing, api.HealthWarning, api.HealthCritical:
	default:
		return nil, errf(400, "Invalid check state: %s", strconv.Quote(state))
	}
	return s.healthChecksQuery(w, r,
		func() uint64 { return s.st.maxIndex(tChecks) },
		func(c *api.HealthCheck) bool { return state == "any" || c.Status == state })
}

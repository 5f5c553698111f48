package consuldev

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// duration is a JSON duration: a Go duration string ("10s") or a number
// of nanoseconds.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		if x == "" {
			*d = 0
			return nil
		}
		p, err := time.ParseDuration(x)
		if err != nil {
			return err
		}
		*d = duration(p)
	case float64:
		*d = duration(time.Duration(x))
	case nil:
		*d = 0
	default:
		return fmt.Errorf("invalid duration %s", b)
	}
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// checkDef is a check definition as sent to the agent (Consul's CheckType
// plus the check/register fields).
type checkDef struct {
	ID                             string `json:",omitempty"`
	CheckID                        string `json:",omitempty"`
	Name                           string `json:",omitempty"`
	ServiceID                      string `json:",omitempty"`
	Status                         string `json:",omitempty"`
	Notes                          string `json:",omitempty"`
	ScriptArgs                     []string
	Args                           []string `json:",omitempty"`
	DockerContainerID              string   `json:",omitempty"`
	Shell                          string   `json:",omitempty"`
	Interval                       duration
	Timeout                        duration
	TTL                            duration
	DeregisterCriticalServiceAfter duration
	HTTP                           string              `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	Body                           string              `json:",omitempty"`
	DisableRedirects               bool                `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	TCPUseTLS                      bool                `json:",omitempty"`
	UDP                            string              `json:",omitempty"`
	OSService                      string              `json:",omitempty"`
	TLSServerName                  string              `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	GRPC                           string              `json:",omitempty"`
	GRPCUseTLS                     bool                `json:",omitempty"`
	H2PING                         string              `json:",omitempty"`
	H2PingUseTLS                   bool                `json:",omitempty"`
	AliasNode                      string              `json:",omitempty"`
	AliasService                   string              `json:",omitempty"`
	SuccessBeforePassing           int                 `json:",omitempty"`
	FailuresBeforeWarning          int                 `json:",omitempty"`
	FailuresBeforeCritical         int                 `json:",omitempty"`
	OutputMaxSize                  int                 `json:",omitempty"`
}

func (c *checkDef) empty() bool {
	return c.TTL == 0 && c.Interval == 0 && c.HTTP == "" && c.TCP == "" && c.UDP == "" && c.GRPC == "" &&
		c.H2PING == "" && c.AliasNode == "" && c.AliasService == "" && len(c.ScriptArgs) == 0 &&
		len(c.Args) == 0 && c.DockerContainerID == "" && c.OSService == "" && c.CheckID == "" && c.ID == "" && c.Name == ""
}

func (c *checkDef) isScript() bool {
	return len(c.ScriptArgs) > 0 || len(c.Args) > 0 || c.DockerContainerID != ""
}

// typ is the check type name (Consul's CheckType.Type).
func (c *checkDef) typ() string {
	switch {
	case c.GRPC != "":
		return "grpc"
	case c.HTTP != "":
		return "http"
	case c.TCP != "":
		return "tcp"
	case c.UDP != "":
		return "udp"
	case c.H2PING != "":
		return "h2ping"
	case c.TTL > 0:
		return "ttl"
	case c.AliasNode != "" || c.AliasService != "":
		return "alias"
	case c.DockerContainerID != "":
		return "docker"
	case c.OSService != "":
		return "os_service"
	case c.isScript():
		return "script"
	}
	return ""
}

// validate mirrors Consul's CheckType.Validate.
func (c *checkDef) validate() error {
	intervalType := c.HTTP != "" || c.TCP != "" || c.UDP != "" || c.GRPC != "" || c.H2PING != "" || c.OSService != "" || c.isScript()
	if c.Interval > 0 && c.TTL > 0 {
		return fmt.Errorf("Interval and TTL cannot both be specified")
	}
	if intervalType && c.Interval <= 0 {
		return fmt.Errorf("Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks")
	}
	if c.AliasNode == "" && c.AliasService == "" && !intervalType && c.TTL <= 0 {
		return fmt.Errorf("TTL must be > 0 for TTL checks")
	}
	if c.OutputMaxSize < 0 {
		return fmt.Errorf("MaxOutputMaxSize must be positive")
	}
	return nil
}

func validStatus(s string) bool {
	return s == api.HealthPassing || s == api.HealthWarning || s == api.HealthCritical
}

// serviceDef is the agent service registration body.
type serviceDef struct {
	Kind              api.ServiceKind
	ID                string
	Name              string
	Tags              []string
	Port              int
	Ports             api.ServicePorts
	Address           string
	SocketPath        string
	TaggedAddresses   map[string]api.ServiceAddress
	EnableTagOverride bool
	Meta              map[string]string
	Weights           *api.AgentWeights
	Check             *checkDef
	Checks            []*checkDef
	Proxy             *api.AgentServiceConnectProxyConfig
	Connect           *api.AgentServiceConnect
	Locality          *api.Locality
	Namespace         string
	Partition         string
}

// agentState is the agent-local state: services and checks registered
// through /v1/agent, with their runners. Guarded by Server.mu.
type agentState struct {
	services map[string]*agentService
	checks   map[string]*agentCheck
}

type agentService struct {
	Service *api.AgentService
}

// agentCheck is a local check: definition, current status and runtime.
type agentCheck struct {
	Def   checkDef
	Check *api.HealthCheck

	criticalSince time.Time
	ttlDeadline   time.Time
	ttlTimer      *time.Timer
	stop          chan struct{}
	successes     int
	failures      int
}

func newAgentState() *agentState {
	return &agentState{services: map[string]*agentService{}, checks: map[string]*agentCheck{}}
}

func (a *agentState) stopAll() {
	for _, c := range a.checks {
		c.halt()
	}
}

func (c *agentCheck) halt() {
	if c.stop != nil {
		close(c.stop)
		c.stop = nil
	}
	if c.ttlTimer != nil {
		c.ttlTimer.Stop()
		c.ttlTimer = nil
	}
}

// buildAgentService is the /v1/agent view of a local service.
func (s *Server) buildAgentService(svc *api.AgentService) *api.AgentService {
	cp := *svc
	cp.Tags = nonNil(cp.Tags)
	if cp.Meta == nil {
		cp.Meta = map[string]string{}
	}
	if cp.Weights.Passing == 0 && cp.Weights.Warning == 0 {
		cp.Weights = api.AgentWeights{Passing: 1, Warning: 1}
	}
	cp.CreateIndex, cp.ModifyIndex = 0, 0
	cp.Datacenter = s.cfg.Datacenter
	return &cp
}

func agentCheckView(c *api.HealthCheck) *api.AgentCheck {
	return &api.AgentCheck{
		Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes,
		Output: c.Output, ServiceID: c.ServiceID, ServiceName: c.ServiceName, Type: c.Type,
		ExposedPort: c.ExposedPort, Definition: c.Definition,
	}
}

func (s *Server) agentServiceRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var def serviceDef
	if err := decodeLenient(r, &def); err != nil {
		return nil, err
	}
	if def.Name == "" {
		return nil, errf(400, "Missing service name")
	}
	if def.Address == "0.0.0.0" || def.Address == "::" || def.Address == "[::]" {
		return nil, errf(400, "Invalid service address")
	}
	if def.Weights != nil && (def.Weights.Passing < 1 || def.Weights.Warning < 0) {
		return nil, errf(400, "Invalid Weights: Passing must be greater than 0")
	}
	if err := validateMeta(def.Meta); err != nil {
		return nil, errf(400, "Invalid Service Meta: %v", err)
	}
	var defs []*checkDef
	if def.Check != nil && !def.Check.empty() {
		defs = append(defs, def.Check)
	}
	for _, c := range def.Checks {
		if c != nil {
			defs = append(defs, c)
		}
	}
	for _, c := range defs {
		if err := c.validate(); err != nil {
			return nil, errf(400, "Invalid check: %v", err)
		}
		if c.Status != "" && !validStatus(c.Status) {
			return nil, errf(400, "Status for checks must 'passing', 'warning', 'critical'")
		}
		if c.isScript() {
			return nil, errf(500, "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true")
		}
	}
	if def.ID == "" {
		def.ID = def.Name
	}
	svc := &api.AgentService{
		Kind: def.Kind, ID: def.ID, Service: def.Name, Tags: nonNil(def.Tags), Meta: def.Meta,
		Port: def.Port, Ports: def.Ports, Address: def.Address, SocketPath: def.SocketPath,
		TaggedAddresses: def.TaggedAddresses, EnableTagOverride: def.EnableTagOverride,
		Weights: api.AgentWeights{Passing: 1, Warning: 1}, Proxy: def.Proxy, Connect: def.Connect,
		Locality: def.Locality,
	}
	if svc.Meta == nil {
		svc.Meta = map[string]string{}
	}
	if def.Weights != nil {
		svc.Weights = *def.Weights
	}
	if ip := net.ParseIP(def.Address); ip != nil {
		if svc.TaggedAddresses == nil {
			svc.TaggedAddresses = map[string]api.ServiceAddress{}
		}
		lan, wan := "lan_ipv4", "wan_ipv4"
		if ip.To4() == nil {
			lan, wan = "lan_ipv6", "wan_ipv6"
		}
		for _, k := range []string{lan, wan} {
			if _, ok := svc.TaggedAddresses[k]; !ok {
				svc.TaggedAddresses[k] = api.ServiceAddress{Address: def.Address, Port: def.Port}
			}
		}
	}
	q := r.URL.Query()
	replace := false
	if vs, ok := q["replace-existing-checks"]; ok {
		replace = len(vs) == 0 || vs[0] == "" || vs[0] == "true" || vs[0] == "1"
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.st.Index + 1
	keep := map[string]bool{}
	checks := make([]*agentCheck, 0, len(defs))
	for i, d := range defs {
		id := d.CheckID
		if id == "" {
			id = d.ID
		}
		if id == "" {
			if len(defs) == 1 {
				id = "service:" + svc.ID
			} else {
				id = fmt.Sprintf("service:%s:%d", svc.ID, i+1)
			}
		}
		name := d.Name
		if name == "" {
			name = fmt.Sprintf("Service '%s' check", svc.Service)
		}
		cd := *d
		cd.CheckID, cd.ID, cd.Name, cd.ServiceID = id, "", name, svc.ID
		checks = append(checks, &agentCheck{Def: cd})
		keep[id] = true
	}
	s.agent.services[svc.ID] = &agentService{Service: svc}
	s.st.ensureService(idx, s.cfg.NodeName, svc)
	for _, c := range checks {
		s.addCheckLocked(idx, c)
	}
	if replace {
		for id, c := range s.agent.checks {
			if c.Check.ServiceID == svc.ID && !keep[id] {
				s.removeCheckLocked(idx, id)
			}
		}
	}
	s.st.Index = max(s.st.Index, idx)
	s.commit()
	return nil, nil
}

func validateMeta(meta map[string]string) error {
	if len(meta) > 64 {
		return fmt.Errorf("Node metadata cannot contain more than 64 key/value pairs")
	}
	for k, v := range meta {
		if k == "" {
			return fmt.Errorf("Key cannot be blank")
		}
		if len(k) > 128 {
			return fmt.Errorf("Key is too long (limit: 128 characters)")
		}
		if strings.HasPrefix(k, "consul-") {
			return fmt.Errorf("Key prefix 'consul-' is reserved for internal use")
		}
		if len(v) > 512 {
			return fmt.Errorf("Value is too long (limit: 512 characters)")
		}
	}
	return nil
}

// addCheckLocked registers (or re-registers) a local check, writes it to
// the catalog and starts its runner. A re-registered check keeps its
// status and output. Caller holds s.mu.
func (s *Server) addCheckLocked(idx uint64, c *agentCheck) {
	d := &c.Def
	hc := &api.HealthCheck{
		Node:      s.cfg.NodeName,
		CheckID:   d.CheckID,
		Name:      d.Name,
		Status:    api.HealthCritical,
		Notes:     d.Notes,
		ServiceID: d.ServiceID,
		Type:      d.typ(),
	}
	if d.Status != "" {
		hc.Status = d.Status
	}
	if d.typ() != "ttl" {
		hc.Definition = api.HealthCheckDefinition{
			HTTP: d.HTTP, Header: d.Header, Method: d.Method, Body: d.Body,
			TLSServerName: d.TLSServerName, TLSSkipVerify: d.TLSSkipVerify,
			TCP: d.TCP, TCPUseTLS: d.TCPUseTLS, UDP: d.UDP, GRPC: d.GRPC, OSService: d.OSService,
			GRPCUseTLS:                             d.GRPCUseTLS,
			IntervalDuration:                       time.Duration(d.Interval),
			TimeoutDuration:                        time.Duration(d.Timeout),
			DeregisterCriticalServiceAfterDuration: time.Duration(d.DeregisterCriticalServiceAfter),
		}
	} else if d.DeregisterCriticalServiceAfter > 0 {
		hc.Definition.DeregisterCriticalServiceAfterDuration = time.Duration(d.DeregisterCriticalServiceAfter)
	}
	if old := s.agent.checks[d.CheckID]; old != nil {
		hc.Status, hc.Output = old.Check.Status, old.Check.Output
		c.criticalSince = old.criticalSince
		old.halt()
	}
	if svc := s.agent.services[d.ServiceID]; svc != nil {
		hc.ServiceName = svc.Service.Service
		hc.ServiceTags = nonNil(svc.Service.Tags)
	}
	hc.ServiceTags = nonNil(hc.ServiceTags)
	c.Check = hc
	if hc.Status == api.HealthCritical && c.criticalSince.IsZero() {
		c.criticalSince = time.Now()
	}
	s.agent.checks[d.CheckID] = c
	s.syncCheck(idx, c)
	s.startCheck(c)
}

// syncCheck writes the agent's view of a check to the catalog and
// invalidates dependent sessions when it is critical. Caller holds s.mu.
func (s *Server) syncCheck(idx uint64, c *agentCheck) bool {
	cp := *c.Check
	if !s.st.ensureCheck(idx, &cp) {
		return false
	}
	s.st.Index = max(s.st.Index, idx)
	if cp.Status == api.HealthCritical {
		s.invalidateSessionsForCheck(idx, cp.Node, cp.CheckID)
	}
	return true
}

// removeCheckLocked stops and removes a local check. Caller holds s.mu.
func (s *Server) removeCheckLocked(idx uint64, id string) {
	c := s.agent.checks[id]
	if c == nil {
		return
	}
	c.halt()
	delete(s.agent.checks, id)
	if s.st.deleteCheck(idx, s.cfg.NodeName, id) {
		s.st.Index = max(s.st.Index, idx)
		s.invalidateSessionsForCheck(idx, s.cfg.NodeName, id)
	}
}

// removeServiceLocked removes a local service and its checks.
func (s *Server) removeServiceLocked(idx uint64, id string) bool {
	if s.agent.services[id] == nil {
		return false
	}
	for cid, c := range s.agent.checks {
		if c.Check.ServiceID == id {
			s.removeCheckLocked(idx, cid)
		}
	}
	delete(s.agent.services, id)
	removed, _ := s.st.deleteService(idx, s.cfg.NodeName, id)
	for _, cid := range removed {
		s.invalidateSessionsForCheck(idx, s.cfg.NodeName, cid)
	}
	s.st.Index = max(s.st.Index, idx)
	return true
}

func (s *Server) agentServiceDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/deregister/")
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removeServiceLocked(s.st.Index+1, id) {
		return nil, errf(404, "Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id)
	}
	s.commit()
	return nil, nil
}

func (s *Server) agentServices(w http.ResponseWriter, r *http.Request) (any, error) {
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*api.AgentService{}
	for id, svc := range s.agent.services {
		v := s.buildAgentService(svc.Service)
		if err := putMatch(o, out, id, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func contentHash(v any) string {
	b, _ := json.Marshal(v)
	h := fnv.New64a()
	_, _ = h.Write(b)
	return fmt.Sprintf("%016x", h.Sum64())
}

// agentService serves GET /v1/agent/service/<id> with hash blocking.
func (s *Server) agentService(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/")
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	want := r.URL.Query().Get("hash")
	var timeout <-chan time.Time
	if want != "" {
		t := time.NewTimer(o.timeout())
		defer t.Stop()
		timeout = t.C
	}
	for {
		s.mu.Lock()
		var v *api.AgentService
		if svc := s.agent.services[id]; svc != nil {
			v = s.buildAgentService(svc.Service)
		}
		ch, closed := s.changed, s.closed
		s.mu.Unlock()
		if v == nil {
			return nil, errf(404, "unknown service ID: %s", id)
		}
		v.ContentHash = ""
		h := contentHash(v)
		if want == "" || h != want || closed {
			v.ContentHash = h
			w.Header().Set("X-Consul-ContentHash", h)
			return v, nil
		}
		select {
		case <-ch:
		case <-timeout:
			want = ""
		case <-r.Context().Done():
			return nil, errWritten
		}
	}
}

func (s *Server) agentChecks(w http.ResponseWriter, r *http.Request) (any, error) {
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*api.AgentCheck{}
	for id, c := range s.agent.checks {
		v := agentCheckView(c.Check)
		if err := putMatch(o, out, id, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Server) agentCheckRegister(w http.ResponseWriter, r *http.Request) (any, error) {
	var d checkDef
	if err := decodeLenient(r, &d); err != nil {
		return nil, err
	}
	if d.Name == "" {
		return nil, errf(400, "Missing check name")
	}
	if d.Status != "" && !validStatus(d.Status) {
		return nil, errf(400, "Bad check status")
	}
	if err := d.validate(); err != nil {
		return nil, errf(400, "Invalid check: %v", err)
	}
	if d.isScript() {
		return nil, errf(500, "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true")
	}
	if d.CheckID == "" {
		d.CheckID = d.ID
	}
	if d.CheckID == "" {
		d.CheckID = d.Name
	}
	d.ID = ""
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.ServiceID != "" && s.agent.services[d.ServiceID] == nil {
		return nil, errf(404, "ServiceID %q does not exist", d.ServiceID)
	}
	idx := s.st.Index + 1
	s.addCheckLocked(idx, &agentCheck{Def: d})
	s.commit()
	return nil, nil
}

func (s *Server) agentCheckDeregister(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/check/deregister/")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agent.checks[id] == nil {
		return nil, errf(404, "Unknown check ID %q. Ensure that the check ID is passed, not the check name.", id)
	}
	s.removeCheckLocked(s.st.Index+1, id)
	s.commit()
	return nil, nil
}

func (s *Server) agentCheckTTL(status string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		// The path is /v1/agent/check/<verb>/<id>.
		rest := strings.TrimPrefix(r.URL.Path, "/v1/agent/check/")
		_, id, _ := strings.Cut(rest, "/")
		return nil, s.updateTTL(id, status, r.URL.Query().Get("note"))
	}
}

func (s *Server) agentCheckUpdate(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/check/update/")
	var body struct {
		Status string
		Output string
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if !validStatus(body.Status) {
		return nil, errf(400, "Invalid check status: '%s'", body.Status)
	}
	return nil, s.updateTTL(id, body.Status, body.Output)
}

// outputMaxSize is Consul's default check output limit.
const outputMaxSize = 4096

func truncateOutput(out string, limit int) string {
	if limit <= 0 {
		limit = outputMaxSize
	}
	if len(out) > limit {
		return fmt.Sprintf("%s ... (captured %d of %d bytes)", out[:limit], limit, len(out))
	}
	return out
}

func (s *Server) updateTTL(id, status, output string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.agent.checks[id]
	if c == nil {
		return errf(404, "Unknown check ID %q. Ensure that the check ID is passed, not the check name.", id)
	}
	if c.Def.TTL <= 0 {
		return fmt.Errorf("CheckID %q does not have associated TTL", id)
	}
	c.ttlDeadline = time.Now().Add(time.Duration(c.Def.TTL))
	if c.ttlTimer != nil {
		c.ttlTimer.Reset(time.Duration(c.Def.TTL))
	}
	s.setCheckStatus(c, status, truncateOutput(output, c.Def.OutputMaxSize))
	return nil
}

// setCheckStatus records a new status/output for a local check and syncs it
// to the catalog (one new index if anything changed). Caller holds s.mu.
func (s *Server) setCheckStatus(c *agentCheck, status, output string) {
	if c.Check.Status == status && c.Check.Output == output {
		return
	}
	if status == api.HealthCritical && c.Check.Status != api.HealthCritical {
		c.criticalSince = time.Now()
	} else if status != api.HealthCritical {
		c.criticalSince = time.Time{}
	}
	cp := *c.Check
	cp.Status, cp.Output = status, output
	c.Check = &cp
	if s.syncCheck(s.st.Index+1, c) {
		s.commit()
	} else {
		s.dirty = true
	}
}

// reapCritical deregisters services whose check has been critical for
// longer than its DeregisterCriticalServiceAfter.
func (s *Server) reapCritical(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var reap []string
	for _, c := range s.agent.checks {
		dcsa := time.Duration(c.Def.DeregisterCriticalServiceAfter)
		if dcsa <= 0 || c.Check.ServiceID == "" || c.Check.Status != api.HealthCritical || c.criticalSince.IsZero() {
			continue
		}
		if now.Sub(c.criticalSince) > dcsa {
			reap = append(reap, c.Check.ServiceID)
		}
	}
	if len(reap) == 0 {
		return
	}
	idx := s.st.Index + 1
	for _, id := range reap {
		if s.removeServiceLocked(idx, id) {
			s.log.Info("consuldev: deregistered service with critical check", "service", id)
		}
	}
	s.commit()
}

// ---- maintenance ----

const (
	nodeMaintCheckID    = "_node_maintenance"
	serviceMaintPrefix  = "_service_maintenance:"
	defaultMaintReason  = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
	defaultSvcMaintNote = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
)

// maintenanceQuery reads ?enable (required, a boolean) and ?reason
// (defaultReason when empty) of a maintenance request, with Consul's 400
// errors.
func maintenanceQuery(r *http.Request, defaultReason string) (on bool, reason string, err error) {
	q := r.URL.Query()
	enable := q.Get("enable")
	if enable == "" {
		return false, "", errf(400, "Missing value for enable")
	}
	on, err = queryBool(q, "enable")
	if err != nil {
		return false, "", errf(400, "Invalid value for enable: %q", enable)
	}
	reason = q.Get("reason")
	if reason == "" {
		reason = defaultReason
	}
	return on, reason, nil
}

func (s *Server) agentNodeMaintenance(w http.ResponseWriter, r *http.Request) (any, error) {
	on, reason, err := maintenanceQuery(r, defaultMaintReason)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setMaintCheck(on, nodeMaintCheckID, "Node Maintenance Mode", reason, "")
	return nil, nil
}

func (s *Server) agentServiceMaintenance(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/service/maintenance/")
	if id == "" {
		return nil, errf(400, "Missing service ID")
	}
	on, reason, err := maintenanceQuery(r, defaultSvcMaintNote)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agent.services[id] == nil {
		return nil, errf(404, "Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id)
	}
	s.setMaintCheck(on, serviceMaintPrefix+id, "Service Maintenance Mode", reason, id)
	return nil, nil
}

// setMaintCheck turns maintenance on (adds the critical check id, notes
// reason, unless it exists) or off (removes it) and commits. serviceID is
// empty for the node's maintenance. Caller holds s.mu.
func (s *Server) setMaintCheck(on bool, id, name, reason, serviceID string) {
	idx := s.st.Index + 1
	if on {
		if s.agent.checks[id] == nil {
			s.addMaintCheck(idx, id, name, reason, serviceID)
		}
	} else {
		s.removeCheckLocked(idx, id)
	}
	s.commit()
}

func (s *Server) addMaintCheck(idx uint64, id, name, reason, serviceID string) {
	c := &agentCheck{Def: checkDef{CheckID: id, Name: name, Notes: reason, ServiceID: serviceID, Status: api.HealthCritical}}
	s.addCheckLocked(idx, c)
	c.Check.Type = "maintenance"
	s.syncCheck(idx, c)
}

// ---- agent health ----

type agentHealth struct {
	AggregatedStatus string
	Service          *api.AgentService
	Checks           api.HealthChecks
}

func (s *Server) localHealth(id string) *agentHealth {
	svc := s.agent.services[id]
	if svc == nil {
		return nil
	}
	h := &agentHealth{Service: s.buildAgentService(svc.Service), Checks: api.HealthChecks{}}
	ids := []string{}
	for cid, c := range s.agent.checks {
		if c.Check.ServiceID == id || c.Check.CheckID == nodeMaintCheckID {
			ids = append(ids, cid)
		}
	}
	sort.Strings(ids)
	for _, cid := range ids {
		cp := *s.agent.checks[cid].Check
		h.Checks = append(h.Checks, &cp)
	}
	h.AggregatedStatus = h.Checks.AggregatedStatus()
	return h
}

func healthCode(status string) int {
	switch status {
	case api.HealthPassing:
		return http.StatusOK
	case api.HealthWarning:
		return http.StatusTooManyRequests
	default:
		return http.StatusServiceUnavailable
	}
}

func (s *Server) agentHealthByID(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/agent/health/service/id/")
	s.mu.Lock()
	h := s.localHealth(id)
	s.mu.Unlock()
	text := r.URL.Query().Get("format") == "text"
	if h == nil {
		if text {
			http.Error(w, fmt.Sprintf("ServiceId %s not found", id), http.StatusNotFound)
			return nil, errWritten
		}
		writeJSON(w, r, http.StatusNotFound, fmt.Sprintf("ServiceId %s not found", id))
		return nil, errWritten
	}
	if text {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(healthCode(h.AggregatedStatus))
		_, _ = w.Write([]byte(h.AggregatedStatus))
		return nil, errWritten
	}
	writeJSON(w, r, healthCode(h.AggregatedStatus), h)
	return nil, errWritten
}

func (s *Server) agentHealthByName(w http.ResponseWriter, r *http.Request) (any, error) {
	name := strings.TrimPrefix(r.URL.Path, "/v1/agent/health/service/name/")
	s.mu.Lock()
	var out []*agentHealth
	ids := []string{}
	for id, svc := range s.agent.services {
		if svc.Service.Service == name {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		out = append(out, s.localHealth(id))
	}
	s.mu.Unlock()
	text := r.URL.Query().Get("format") == "text"
	if len(out) == 0 {
		if text {
			http.Error(w, fmt.Sprintf("ServiceName %s Not Found", name), http.StatusNotFound)
			return nil, errWritten
		}
		writeJSON(w, r, http.StatusNotFound, fmt.Sprintf("ServiceName %s Not Found", name))
		return nil, errWritten
	}
	var all api.HealthChecks
	for _, h := range out {
		all = append(all, h.Checks...)
	}
	status := all.AggregatedStatus()
	if text {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(healthCode(status))
		_, _ = w.Write([]byte(status))
		return nil, errWritten
	}
	writeJSON(w, r, healthCode(status), out)
	return nil, errWritten
}

// ---- self, members, CA stub ----

func (s *Server) agentSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	cfg := map[string]any{
		"Datacenter":        s.cfg.Datacenter,
		"PrimaryDatacenter": s.cfg.Datacenter,
		"NodeName":          s.cfg.NodeName,
		"NodeID":            s.nodeID,
		"Revision":          "stagesub",
		"Server":            true,
		"Version":           Version,
		"BuildDate":         "2026-01-01T00:00:00Z",
	}
	member := s.member()
	return map[string]any{
		"Config":      cfg,
		"DebugConfig": map[string]any{"DataDir": s.cfg.DataDir, "ClientAddrs": []string{s.Addr()}},
		"Coord":       map[string]any{"Vec": []float64{0, 0, 0, 0, 0, 0, 0, 0}, "Error": 1.5, "Adjustment": 0, "Height": 1e-05},
		"Member":      member,
		"Stats":       map[string]any{"consul": map[string]string{"leader": "true", "server": "true", "known_datacenters": "1"}},
		"Meta":        s.cfg.NodeMeta,
		"xDS":         nil,
	}, nil
}

func (s *Server) member() map[string]any {
	return map[string]any{
		"Name": s.cfg.NodeName,
		"Addr": s.nodeAddr(),
		"Port": 8301,
		"Tags": map[string]string{
			"role": "consul", "dc": s.cfg.Datacenter, "id": s.nodeID, "port": fmt.Sprint(s.cfg.ServerPort),
			"bootstrap": "1", "build": Version + ":stagesub", "vsn": "2", "vsn_min": "2", "vsn_max": "3",
			"raft_vsn": "3", "segment": "", "acls": "0",
		},
		"Status":      1,
		"ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
		"DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
	}
}

func (s *Server) agentMembers(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.URL.Query().Get("wan") != "" {
		m := s.member()
		m["Name"] = s.cfg.NodeName + "." + s.cfg.Datacenter
		return []any{m}, nil
	}
	return []any{s.member()}, nil
}

func (s *Server) agentCARoots(w http.ResponseWriter, r *http.Request) (any, error) {
	// A stub so tools that wait for an active CA root (sdk/testutil) proceed.
	// The stand-in has no Connect CA.
	id := "stagesub-dev-ca"
	return map[string]any{
		"ActiveRootID": id,
		"TrustDomain":  "11111111-2222-3333-4444-555555555555.consul",
		"Roots": []map[string]any{{
			"ID": id, "Name": "StageSub dev stub CA (no Connect support)", "Active": true,
			"RootCert": "", "IntermediateCerts": nil, "CreateIndex": 1, "ModifyIndex": 1,
		}},
	}, nil
}

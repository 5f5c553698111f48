package consuldev

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

const (
	sessionTTLMax  = 24 * time.Hour
	maxLockDelay   = 60 * time.Second
	serfCheckID    = "serfHealth"
	defaultLockDly = 15 * time.Second
)

// sessionReq is the create body; defaults are filled before decoding, like
// Consul does, so absent fields keep them.
type sessionReq struct {
	Name          string
	Node          string
	LockDelay     json.RawMessage
	Behavior      string
	TTL           string
	NodeChecks    []string
	ServiceChecks []serviceCheck
	Checks        []string
}

// parseLockDelay accepts a duration string or a number of nanoseconds; a
// number below 1000 means seconds (Consul's lockDelayMinThreshold).
func parseLockDelay(raw json.RawMessage) (time.Duration, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, err
	}
	var d time.Duration
	switch x := v.(type) {
	case string:
		var err error
		if d, err = time.ParseDuration(x); err != nil {
			return 0, err
		}
	case float64:
		d = time.Duration(x)
	case nil:
		return defaultLockDly, nil
	default:
		return 0, fmt.Errorf("invalid LockDelay %s", raw)
	}
	if d != 0 && d < 1000 {
		d *= time.Second
	}
	return d, nil
}

func (s *Server) sessionCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := s.checkDC(r.URL.Query()); err != nil {
		return nil, err
	}
	req := sessionReq{
		Node:       s.cfg.NodeName,
		Behavior:   "release",
		NodeChecks: []string{serfCheckID},
		Checks:     []string{serfCheckID},
	}
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	lockDelay := defaultLockDly
	if len(req.LockDelay) > 0 {
		d, err := parseLockDelay(req.LockDelay)
		if err != nil {
			return nil, errf(400, "Request decode failed: %v", err)
		}
		lockDelay = d
	}
	// fixupEmptySessionChecks
	switch {
	case len(req.Checks) == 0:
		req.NodeChecks = []string{}
	case len(req.Checks) == 1 && req.Checks[0] == serfCheckID:
		req.Checks = nil
	case len(req.NodeChecks) == 0:
		req.Checks = nil
	}
	if req.NodeChecks == nil {
		req.NodeChecks = []string{}
	}
	switch req.Behavior {
	case "":
		req.Behavior = "release"
	case "release", "delete":
	default:
		return nil, fmt.Errorf("Invalid Behavior setting '%s'", req.Behavior)
	}
	if req.TTL != "" {
		ttl, err := time.ParseDuration(req.TTL)
		if err != nil {
			return nil, fmt.Errorf("Session TTL '%s' invalid: %v", req.TTL, err)
		}
		if ttl != 0 && (ttl < s.cfg.SessionTTLMin || ttl > sessionTTLMax) {
			return nil, fmt.Errorf("Invalid Session TTL '%d', must be between [%v=%v]", ttl, s.cfg.SessionTTLMin, sessionTTLMax)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.Nodes[req.Node] == nil {
		return nil, fmt.Errorf("apply failed: Missing node registration")
	}
	checkIDs := append(append([]string{}, req.NodeChecks...), req.Checks...)
	for _, sc := range req.ServiceChecks {
		checkIDs = append(checkIDs, sc.ID)
	}
	for _, id := range checkIDs {
		c := s.st.Checks[req.Node][id]
		if c == nil {
			return nil, fmt.Errorf("apply failed: Missing check '%s' registration", id)
		}
		if c.Status == "critical" {
			return nil, fmt.Errorf("apply failed: Check '%s' is in critical state", id)
		}
	}
	idx := s.st.next()
	sess := &session{
		ID:            newUUID(),
		Name:          req.Name,
		Node:          req.Node,
		LockDelay:     lockDelay,
		Behavior:      req.Behavior,
		TTL:           req.TTL,
		NodeChecks:    req.NodeChecks,
		ServiceChecks: req.ServiceChecks,
		Checks:        req.Checks,
		CreateIndex:   idx,
		ModifyIndex:   idx,
	}
	s.st.Sessions[sess.ID] = sess
	s.st.touch(idx, tSessions)
	s.startSessionTimer(sess)
	s.commit()
	return map[string]string{"ID": sess.ID}, nil
}

// sessionTTL returns the parsed TTL of sess (0 when none).
func sessionTTL(sess *session) time.Duration {
	if sess.TTL == "" {
		return 0
	}
	d, err := time.ParseDuration(sess.TTL)
	if err != nil {
		return 0
	}
	return d
}

// startSessionTimer (re)arms the TTL timer of sess: it is invalidated when
// not renewed within 2×TTL. Caller holds s.mu.
func (s *Server) startSessionTimer(sess *session) {
	ttl := sessionTTL(sess)
	if ttl <= 0 || s.closed {
		return
	}
	id := sess.ID
	d := 2 * ttl
	s.st.sessionDeadline[id] = time.Now().Add(d)
	if t := s.st.sessionTimers[id]; t != nil {
		t.Reset(d)
		return
	}
	s.st.sessionTimers[id] = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		dl, ok := s.st.sessionDeadline[id]
		if !ok || s.closed || time.Now().Before(dl) {
			return
		}
		if s.st.Sessions[id] == nil {
			return
		}
		s.log.Debug("consuldev: session TTL expired", "session", id)
		s.invalidateSession(s.st.next(), id)
		s.commit()
	})
}

func (s *Server) stopSessionTimers() {
	for id, t := range s.st.sessionTimers {
		t.Stop()
		delete(s.st.sessionTimers, id)
	}
}

// restoreSessions re-arms TTL timers after a restart (full TTL, like a new
// Consul leader does). Caller holds s.mu.
func (s *Server) restoreSessions() {
	for _, sess := range s.st.Sessions {
		s.startSessionTimer(sess)
	}
}

// invalidateSession destroys a session and applies its behavior to the
// keys it holds (release or delete), with lock-delay. Caller holds s.mu and
// commits.
func (s *Server) invalidateSession(idx uint64, id string) {
	sess := s.st.Sessions[id]
	if sess == nil {
		return
	}
	delete(s.st.Sessions, id)
	if t := s.st.sessionTimers[id]; t != nil {
		t.Stop()
		delete(s.st.sessionTimers, id)
	}
	delete(s.st.sessionDeadline, id)
	s.st.Index = max(s.st.Index, idx)
	s.st.touch(idx, tSessions)
	delay := min(sess.LockDelay, maxLockDelay)
	now := time.Now()
	changed := false
	for key, e := range s.st.KV {
		if e.Session != id {
			continue
		}
		changed = true
		if sess.Behavior == "delete" {
			delete(s.st.KV, key)
			s.st.Tombstones[key] = idx
			s.st.touch(idx, tTombstones)
		} else {
			cp := *e
			cp.Session = ""
			cp.ModifyIndex = idx
			s.st.KV[key] = &cp
		}
		if delay > 0 {
			s.st.lockDelay[key] = now.Add(delay)
		}
	}
	if changed {
		s.st.touch(idx, tKVS)
	}
}

// invalidateSessionsForCheck invalidates sessions that depend on the check
// (node check, service check or legacy check list). Caller holds s.mu.
func (s *Server) invalidateSessionsForCheck(idx uint64, node, checkID string) {
	for id, sess := range s.st.Sessions {
		if sess.Node != node {
			continue
		}
		hit := false
		for _, c := range sess.NodeChecks {
			hit = hit || c == checkID
		}
		for _, c := range sess.Checks {
			hit = hit || c == checkID
		}
		for _, c := range sess.ServiceChecks {
			hit = hit || c.ID == checkID
		}
		if hit {
			s.invalidateSession(idx, id)
		}
	}
}

// invalidateSessionsForNode invalidates every session of node.
func (s *Server) invalidateSessionsForNode(idx uint64, node string) {
	for id, sess := range s.st.Sessions {
		if sess.Node == node {
			s.invalidateSession(idx, id)
		}
	}
}

func (s *Server) sessionDestroy(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/session/destroy/")
	if id == "" {
		return nil, errf(400, "Missing session")
	}
	if err := s.checkDC(r.URL.Query()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.Sessions[id] != nil {
		s.invalidateSession(s.st.next(), id)
		s.commit()
	}
	return true, nil
}

func (s *Server) sessionRenew(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/session/renew/")
	if id == "" {
		return nil, errf(400, "Missing session")
	}
	if err := s.checkDC(r.URL.Query()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.st.Sessions[id]
	if sess == nil {
		return nil, errf(404, "Session id '%s' not found", id)
	}
	s.startSessionTimer(sess)
	cp := *sess
	return []*session{&cp}, nil
}

// sessionQuery serves the blocking session reads; pick selects sessions.
func (s *Server) sessionQuery(w http.ResponseWriter, r *http.Request, pick func(*session) bool) (any, error) {
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	var out []*session
	idx, err := s.block(r, o, func() (uint64, bool, error) {
		out = []*session{}
		for _, sess := range s.st.Sessions {
			if pick(sess) {
				cp := *sess
				out = append(out, &cp)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		return s.st.maxIndex(tSessions), false, nil
	})
	if err != nil {
		return nil, err
	}
	setMeta(w, idx)
	return out, nil
}

func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/v1/session/info/")
	if id == "" {
		return nil, errf(400, "Missing session")
	}
	return s.sessionQuery(w, r, func(sess *session) bool { return sess.ID == id })
}

func (s *Server) sessionNode(w http.ResponseWriter, r *http.Request) (any, error) {
	node := strings.TrimPrefix(r.URL.Path, "/v1/session/node/")
	if node == "" {
		return nil, errf(400, "Missing node name")
	}
	return s.sessionQuery(w, r, func(sess *session) bool { return sess.Node == node })
}

func (s *Server) sessionList(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.sessionQuery(w, r, func(*session) bool { return true })
}

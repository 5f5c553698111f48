package consuldev

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-bexpr"
)

// httpError is an error with an HTTP status; the body is the plain text.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// handlerFunc returns a value to encode as JSON (nil = empty 200 body) or
// an error. A handler that wrote the response itself returns errWritten.
type handlerFunc func(w http.ResponseWriter, r *http.Request) (any, error)

var errWritten = errors.New("response written")

type route struct {
	methods []string
	fn      handlerFunc
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	get := []string{"GET"}
	put := []string{"PUT"}
	add := func(pattern string, methods []string, fn handlerFunc) {
		mux.Handle(pattern, s.wrap(route{methods: methods, fn: fn}))
	}
	// KV and txn
	add("/v1/kv/", []string{"GET", "PUT", "DELETE"}, s.kvEndpoint)
	add("/v1/txn", put, s.txnEndpoint)
	// sessions
	add("/v1/session/create", put, s.sessionCreate)
	add("/v1/session/destroy/", put, s.sessionDestroy)
	add("/v1/session/renew/", put, s.sessionRenew)
	add("/v1/session/info/", get, s.sessionInfo)
	add("/v1/session/node/", get, s.sessionNode)
	add("/v1/session/list", get, s.sessionList)
	// agent
	add("/v1/agent/self", get, s.agentSelf)
	add("/v1/agent/members", get, s.agentMembers)
	add("/v1/agent/services", get, s.agentServices)
	add("/v1/agent/service/", get, s.agentService)
	add("/v1/agent/service/register", put, s.agentServiceRegister)
	add("/v1/agent/service/deregister/", put, s.agentServiceDeregister)
	add("/v1/agent/service/maintenance/", put, s.agentServiceMaintenance)
	add("/v1/agent/maintenance", put, s.agentNodeMaintenance)
	add("/v1/agent/checks", get, s.agentChecks)
	add("/v1/agent/check/register", put, s.agentCheckRegister)
	add("/v1/agent/check/deregister/", put, s.agentCheckDeregister)
	add("/v1/agent/check/pass/", put, s.agentCheckTTL("passing"))
	add("/v1/agent/check/warn/", put, s.agentCheckTTL("warning"))
	add("/v1/agent/check/fail/", put, s.agentCheckTTL("critical"))
	add("/v1/agent/check/update/", put, s.agentCheckUpdate)
	add("/v1/agent/health/service/id/", get, s.agentHealthByID)
	add("/v1/agent/health/service/name/", get, s.agentHealthByName)
	add("/v1/agent/connect/ca/roots", get, s.agentCARoots)
	// catalog
	add("/v1/catalog/register", put, s.catalogRegister)
	add("/v1/catalog/deregister", put, s.catalogDeregister)
	add("/v1/catalog/datacenters", get, s.catalogDatacenters)
	add("/v1/catalog/nodes", get, s.catalogNodes)
	add("/v1/catalog/node/", get, s.catalogNode)
	add("/v1/catalog/node-services/", get, s.catalogNodeServices)
	add("/v1/catalog/services", get, s.catalogServices)
	add("/v1/catalog/service/", get, s.catalogService)
	// health
	add("/v1/health/service/", get, s.healthService)
	add("/v1/health/checks/", get, s.healthChecks)
	add("/v1/health/node/", get, s.healthNode)
	add("/v1/health/state/", get, s.healthState)
	// status
	add("/v1/status/leader", get, func(_ http.ResponseWriter, r *http.Request) (any, error) {
		if err := s.checkDC(r.URL.Query()); err != nil {
			return nil, err
		}
		return s.leaderAddr(), nil
	})
	add("/v1/status/peers", get, func(_ http.ResponseWriter, r *http.Request) (any, error) {
		if err := s.checkDC(r.URL.Query()); err != nil {
			return nil, err
		}
		return []string{s.leaderAddr()}, nil
	})
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	}))
	return printablePath(mux)
}

// printablePath rejects URL paths with non-printable characters (400), like
// go-cleanhttp's PrintablePathCheckHandler does in Consul.
func printablePath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range r.URL.Path {
			if c < 0x20 || c == 0x7f {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) wrap(rt route) http.Handler {
	allow := "OPTIONS," + strings.Join(rt.methods, ",")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Consul-Default-ACL-Policy", "allow")
		if r.Method == http.MethodOptions {
			w.Header().Set("Allow", allow)
			return
		}
		ok := false
		for _, m := range rt.methods {
			if m == r.Method {
				ok = true
			}
		}
		if !ok {
			w.Header().Set("Allow", allow)
			http.Error(w, fmt.Sprintf("method %s not allowed", r.Method), http.StatusMethodNotAllowed)
			return
		}
		start := time.Now()
		out, err := rt.fn(w, r)
		if err != nil {
			if errors.Is(err, errWritten) {
				return
			}
			code := http.StatusInternalServerError
			var he *httpError
			if errors.As(err, &he) && he.code != 0 {
				code = he.code
			}
			if strings.Contains(err.Error(), "Permission denied") || strings.Contains(err.Error(), "ACL not found") {
				code = http.StatusForbidden
			}
			s.log.Debug("consuldev: request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
			w.Header().Del("Content-Type")
			w.WriteHeader(code)
			_, _ = w.Write([]byte(err.Error()))
			return
		}
		s.log.Debug("consuldev: request", "method", r.Method, "url", r.URL.String(), "dur", time.Since(start))
		if out == nil {
			return
		}
		writeJSON(w, r, http.StatusOK, out)
	})
}

func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	if a, ok := v.(jsonArray); ok {
		a.write(w, code)
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if _, ok := r.URL.Query()["pretty"]; ok {
		enc.SetIndent("", "    ")
	}
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// ---- query options ----

// queryOpts are the common read parameters.
type queryOpts struct {
	index    uint64
	wait     time.Duration
	filter   *bexpr.Evaluator
	nodeMeta map[string]string
}

const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

func (s *Server) parseQuery(r *http.Request) (*queryOpts, error) {
	q := r.URL.Query()
	o := &queryOpts{}
	if err := s.checkDC(q); err != nil {
		return nil, err
	}
	_, stale := q["stale"]
	_, consistent := q["consistent"]
	if stale && consistent {
		return nil, errf(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
	}
	if v := q.Get("max_stale"); v != "" {
		if _, err := time.ParseDuration(v); err != nil {
			return nil, errf(400, "Invalid max_stale value %q", v)
		}
	}
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, errf(400, "Invalid wait time")
		}
		o.wait = d
	}
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, errf(400, "Invalid index")
		}
		o.index = n
	}
	if v := q.Get("filter"); v != "" {
		ev, err := bexpr.CreateEvaluator(v)
		if err != nil {
			return nil, fmt.Errorf("Failed to create boolean expression evaluator: %w", err)
		}
		o.filter = ev
	}
	for _, kv := range q["node-meta"] {
		if o.nodeMeta == nil {
			o.nodeMeta = map[string]string{}
		}
		k, v, _ := strings.Cut(kv, ":")
		o.nodeMeta[k] = v
	}
	return o, nil
}

func (s *Server) checkDC(q url.Values) error {
	dc := q.Get("dc")
	if dc == "" {
		dc = q.Get("datacenter")
	}
	if dc != "" && dc != s.cfg.Datacenter {
		return errf(500, "No path to datacenter")
	}
	return nil
}

// timeout is the blocking timeout for this query: wait (default 5m, max
// 10m) plus a jitter in [0, wait/16).
func (o *queryOpts) timeout() time.Duration {
	d := o.wait
	if d <= 0 {
		d = defaultWait
	}
	if d > maxWait {
		d = maxWait
	}
	if j := int64(d / 16); j > 0 {
		d += time.Duration(rand.Int64N(j))
	}
	return d
}

// match applies the bexpr filter to v (nil filter matches everything).
func (o *queryOpts) match(v any) (bool, error) {
	if o.filter == nil {
		return true, nil
	}
	ok, err := o.filter.Evaluate(v)
	if err != nil {
		return false, err
	}
	return ok, nil
}

// appendMatch appends v to *out when it matches o's filter; it returns the
// filter's evaluation error.
func appendMatch[T any](o *queryOpts, out *[]T, v T) error {
	ok, err := o.match(v)
	if err != nil {
		return err
	}
	if ok {
		*out = append(*out, v)
	}
	return nil
}

// putMatch sets out[key] to v when v matches o's filter; it returns the
// filter's evaluation error.
func putMatch[T any](o *queryOpts, out map[string]T, key string, v T) error {
	ok, err := o.match(v)
	if err != nil {
		return err
	}
	if ok {
		out[key] = v
	}
	return nil
}

func (o *queryOpts) metaMatch(meta map[string]string) bool {
	for k, v := range o.nodeMeta {
		if mv, ok := meta[k]; !ok || mv != v {
			return false
		}
	}
	return true
}

// block runs query under s.mu until its index passes the requested index,
// following Consul's blocking-query rules (see package doc of blockingquery):
// a non-blocking read (index 0) runs once; otherwise the query re-runs on
// every change until index > requested, or the timeout fires (then the
// latest result is kept). A result that is "not found" twice in a row moves
// the threshold to the current index, so unrelated writes do not end the
// wait. It returns the index to report (never 0).
func (s *Server) block(r *http.Request, o *queryOpts, query func() (idx uint64, notFound bool, err error)) (uint64, error) {
	minIndex := o.index
	blocking := minIndex > 0
	var timeout <-chan time.Time
	if blocking {
		t := time.NewTimer(o.timeout())
		defer t.Stop()
		timeout = t.C
	}
	notFound := false
	for {
		s.mu.Lock()
		idx, nf, err := query()
		ch := s.changed
		closed := s.closed
		s.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if idx == 0 {
			idx = 1
		}
		if !blocking || closed {
			return idx, nil
		}
		if nf {
			if notFound {
				minIndex = idx
			}
			notFound = true
		}
		if idx > minIndex {
			return idx, nil
		}
		select {
		case <-ch:
		case <-timeout:
			return idx, nil
		case <-r.Context().Done():
			return idx, nil
		}
	}
}

// blockIndex is block for queries whose index does not depend on their
// result and which never report "not found": every catalog and health read.
// index is evaluated, under s.mu, on every change; build, also under s.mu,
// runs only when the query is about to answer (index past the requested
// one, not blocking, timeout, or shutdown), so the answer and its index are
// always from the same state. A waiting query thus costs O(index) instead of
// O(result) per unrelated write. With a filter the result is also built on
// the first pass, so a filter that fails to evaluate fails the request at
// once, as in Consul. If the client goes away while waiting, it returns
// errWritten and nothing is built or written.
func (s *Server) blockIndex(r *http.Request, o *queryOpts, index func() uint64, build func() error) (uint64, error) {
	minIndex := o.index
	blocking := minIndex > 0
	var timeout <-chan time.Time
	if blocking {
		t := time.NewTimer(o.timeout())
		defer t.Stop()
		timeout = t.C
	}
	first, expired := true, false
	for {
		s.mu.Lock()
		idx := max(index(), 1)
		done := !blocking || s.closed || expired || idx > minIndex
		if done || (first && o.filter != nil) {
			if err := build(); err != nil {
				s.mu.Unlock()
				return 0, err
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if done {
			return idx, nil
		}
		first = false
		select {
		case <-ch:
		case <-timeout:
			expired = true
		case <-r.Context().Done():
			return 0, errWritten
		}
	}
}

// blockingRead is blockIndex for a catalog or health read: when the query
// answers it writes the query-metadata and consistency headers (setMeta,
// setConsistency). On error it writes nothing.
func (s *Server) blockingRead(w http.ResponseWriter, r *http.Request, o *queryOpts, index func() uint64, build func() error) error {
	idx, err := s.blockIndex(r, o, index, build)
	if err != nil {
		return err
	}
	setMeta(w, idx)
	setConsistency(w, r)
	return nil
}

// setMeta writes the query-metadata headers of a read.
func setMeta(w http.ResponseWriter, idx uint64) {
	if idx == 0 {
		idx = 1
	}
	h := w.Header()
	h.Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	h.Set("X-Consul-KnownLeader", "true")
	h.Set("X-Consul-LastContact", "0")
	h.Set("X-Consul-Query-Backend", "blocking-query")
}

func setConsistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c := "leader"
	if _, ok := q["stale"]; ok {
		c = "stale"
	} else if _, ok := q["consistent"]; ok {
		c = "consistent"
	}
	w.Header().Set("X-Consul-Effective-Consistency", c)
}

// decodeBody decodes a JSON request body into v; an empty body leaves v as is.
func decodeBody(r *http.Request, v any) error {
	body, err := readBody(r, 32<<20)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errf(400, "Request decode failed: %v", err)
	}
	return nil
}

func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(http.MaxBytesReader(nil, r.Body, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errf(413, "Request body too large, max size: %d bytes", limit)
		}
		return nil, errf(400, "Failed to read body: %v", err)
	}
	if n > limit {
		return nil, errf(413, "Request body too large, max size: %d bytes", limit)
	}
	return buf.Bytes(), nil
}

// queryBool reports a boolean flag parameter: present and empty, "1" or
// "true" mean true.
func queryBool(q url.Values, name string) (bool, error) {
	vs, ok := q[name]
	if !ok {
		return false, nil
	}
	v := ""
	if len(vs) > 0 {
		v = vs[0]
	}
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, err
	}
	return b, nil
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// userMapKeys are objects whose keys are user data (never translated).
var userMapKeys = map[string]bool{"meta": true, "nodemeta": true, "servicemeta": true, "header": true, "taggedaddresses": true, "config": true}

// decodeLenient decodes a JSON body like Consul's service/check definition
// decoder: snake_case keys ("deregister_critical_service_after") are
// accepted as well as CamelCase. Keys of user maps (Meta, Header,
// TaggedAddresses, ...) are left alone.
func decodeLenient(r *http.Request, v any) error {
	body, err := readBody(r, 32<<20)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var raw any
	if err := json.Unmarshal(body, &raw); err != nil {
		return errf(400, "Request decode failed: %v", err)
	}
	fixed, err := json.Marshal(translateKeys(raw))
	if err != nil {
		return errf(400, "Request decode failed: %v", err)
	}
	if err := json.Unmarshal(fixed, v); err != nil {
		return errf(400, "Request decode failed: %v", err)
	}
	return nil
}

func translateKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			nk := k
			if strings.Contains(k, "_") {
				nk = strings.ReplaceAll(k, "_", "")
			}
			if nk == "args" { // Consul's alias of ScriptArgs
				nk = "ScriptArgs"
			}
			if userMapKeys[strings.ToLower(nk)] {
				out[nk] = val
				continue
			}
			out[nk] = translateKeys(val)
		}
		return out
	case []any:
		for i := range x {
			x[i] = translateKeys(x[i])
		}
		return x
	}
	return v
}

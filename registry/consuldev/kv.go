package consuldev

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxKVValueSize is Consul's default kv_max_value_size (512 KiB).
const maxKVValueSize = 512 * 1024

// maxTxnOps is the most operations a /v1/txn request may carry.
const maxTxnOps = 128

func (s *Server) kvEndpoint(w http.ResponseWriter, r *http.Request) (any, error) {
	key := strings.TrimPrefix(r.URL.Path, "/v1/kv/")
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		if _, ok := q["keys"]; ok {
			return s.kvKeys(w, r, key)
		}
		if _, ok := q["recurse"]; ok {
			return s.kvList(w, r, key)
		}
		return s.kvGet(w, r, key)
	case http.MethodPut:
		return s.kvPut(r, key)
	default:
		return s.kvDelete(r, key)
	}
}

// validKey rejects what newer Consul servers reject: path traversal and
// leading or trailing spaces.
func validKey(key string) error {
	if strings.TrimSpace(key) != key {
		return errf(400, "invalid key name %q: leading or trailing spaces are not allowed", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == ".." {
			return errf(400, "invalid key name %q: path traversal is not allowed", key)
		}
	}
	if l := strings.ToLower(key); strings.Contains(l, "..%2f") || strings.Contains(l, "%2e%2e") {
		return errf(400, "invalid key name %q: path traversal is not allowed", key)
	}
	return nil
}

func (s *Server) kvGet(w http.ResponseWriter, r *http.Request, key string) (any, error) {
	if key == "" {
		return nil, errf(400, "Missing key name")
	}
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	var e kvEntry
	var found bool
	idx, err := s.block(r, o, func() (uint64, bool, error) {
		cur := s.st.KV[key]
		if cur == nil {
			found = false
			return s.st.maxIndex(tKVS, tTombstones), true, nil
		}
		e, found = *cur, true
		return cur.ModifyIndex, false, nil
	})
	if err != nil {
		return nil, err
	}
	setMeta(w, idx)
	if !found {
		w.WriteHeader(http.StatusNotFound)
		return nil, errWritten
	}
	if _, ok := r.URL.Query()["raw"]; ok {
		h := w.Header()
		h.Set("Content-Type", "text/plain")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "sandbox")
		h.Set("Content-Length", strconv.Itoa(len(e.Value)))
		_, _ = w.Write(e.Value)
		return nil, errWritten
	}
	return []*kvEntry{&e}, nil
}

func (s *Server) kvList(w http.ResponseWriter, r *http.Request, prefix string) (any, error) {
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	var out []*kvEntry
	idx, err := s.block(r, o, func() (uint64, bool, error) {
		entries := s.st.kvTxn().list(prefix)
		out = out[:0]
		for _, e := range entries {
			cp := *e
			out = append(out, &cp)
		}
		return s.st.kvPrefixIndex(prefix, entries), len(out) == 0, nil
	})
	if err != nil {
		return nil, err
	}
	setMeta(w, idx)
	if len(out) == 0 {
		w.WriteHeader(http.StatusNotFound)
		return nil, errWritten
	}
	return out, nil
}

func (s *Server) kvKeys(w http.ResponseWriter, r *http.Request, prefix string) (any, error) {
	o, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	sep := q.Get("separator")
	if sep == "" {
		sep = q.Get("seperator")
	}
	var keys []string
	idx, err := s.block(r, o, func() (uint64, bool, error) {
		entries := s.st.kvTxn().list(prefix)
		keys = keys[:0]
		seen := map[string]bool{}
		for _, e := range entries {
			k := e.Key
			if sep != "" {
				if i := strings.Index(k[len(prefix):], sep); i >= 0 {
					k = k[:len(prefix)+i+len(sep)]
				}
			}
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		return s.st.kvPrefixIndex(prefix, entries), len(keys) == 0, nil
	})
	if err != nil {
		return nil, err
	}
	setMeta(w, idx)
	if len(keys) == 0 {
		if prefix != "" {
			w.WriteHeader(http.StatusNotFound)
			return nil, errWritten
		}
		return []string{}, nil
	}
	return keys, nil
}

func conflicting(q url.Values, names ...string) bool {
	n := 0
	for _, name := range names {
		if _, ok := q[name]; ok {
			n++
		}
	}
	return n > 1
}

func (s *Server) kvPut(r *http.Request, key string) (any, error) {
	if key == "" {
		return nil, errf(400, "Missing key name")
	}
	if err := validKey(key); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if err := s.checkDC(q); err != nil {
		return nil, err
	}
	if conflicting(q, "cas", "acquire", "release") {
		return nil, errf(400, "Conflicting flags: %s", q.Encode())
	}
	var flags uint64
	if v := q.Get("flags"); v != "" {
		f, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, err
		}
		flags = f
	}
	if r.ContentLength > maxKVValueSize {
		return nil, errf(413, "Request body(%d bytes) too large, max size: %d bytes. See https://www.consul.io/docs/agent/config/config-files#kv_max_value_size.", r.ContentLength, maxKVValueSize)
	}
	value, err := readBody(r, maxKVValueSize)
	if err != nil {
		return nil, err
	}
	if len(value) == 0 {
		value = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.st.kvTxn()
	ok := true
	switch {
	case q.Has("cas"):
		idx, err := strconv.ParseUint(q.Get("cas"), 10, 64)
		if err != nil {
			return nil, err
		}
		_, ok = t.cas(key, value, flags, idx)
	case q.Has("acquire"):
		if until, held := s.st.lockDelay[key]; held && time.Now().Before(until) {
			return false, nil
		}
		_, ok, err = t.lock(key, value, flags, q.Get("acquire"))
		if err != nil {
			return nil, errf(500, "raft apply failed: %v", err)
		}
	case q.Has("release"):
		_, ok, err = t.unlock(key, value, flags, q.Get("release"))
		if err != nil {
			return nil, errf(500, "raft apply failed: %v", err)
		}
	default:
		t.set(key, value, flags)
	}
	if t.changed {
		t.commit()
		s.commit()
	}
	return ok, nil
}

func (s *Server) kvDelete(r *http.Request, key string) (any, error) {
	q := r.URL.Query()
	if err := s.checkDC(q); err != nil {
		return nil, err
	}
	recurse := q.Has("recurse")
	if recurse && q.Has("cas") {
		return nil, errf(400, "Conflicting flags: %s", q.Encode())
	}
	if key == "" && !recurse {
		return nil, errf(400, "Missing key name")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.st.kvTxn()
	ok := true
	switch {
	case recurse:
		t.delTree(key)
	case q.Has("cas"):
		idx, err := strconv.ParseUint(q.Get("cas"), 10, 64)
		if err != nil {
			return nil, err
		}
		ok = t.delCAS(key, idx)
	default:
		t.del(key)
	}
	if t.changed {
		t.commit()
		s.commit()
	}
	return ok, nil
}

// ---- /v1/txn ----

type txnKVOp struct {
	Verb    string
	Key     string
	Value   []byte
	Flags   uint64
	Index   uint64
	Session string
}

type txnOp struct {
	KV      *txnKVOp
	Node    json.RawMessage `json:",omitempty"`
	Service json.RawMessage `json:",omitempty"`
	Check   json.RawMessage `json:",omitempty"`
}

type txnResult struct {
	KV *kvEntry `json:",omitempty"`
}

type txnError struct {
	OpIndex int
	What    string
}

type txnResponse struct {
	Results []txnResult
	Errors  []txnError
}

// txnReadResponse is the body of a read-only transaction; like Consul's
// TxnReadResponse it embeds the query meta.
type txnReadResponse struct {
	txnResponse
	Index       uint64
	LastContact int64
	KnownLeader bool
}

func (s *Server) txnEndpoint(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := s.checkDC(r.URL.Query()); err != nil {
		return nil, err
	}
	if r.ContentLength > maxKVValueSize {
		return nil, errf(413, "Request body(%d bytes) too large, max size: %d bytes. See https://www.consul.io/docs/agent/config/config-files#txn_max_req_len.", r.ContentLength, maxKVValueSize)
	}
	body, err := readBody(r, maxKVValueSize)
	if err != nil {
		return nil, err
	}
	var ops []txnOp
	if err := json.Unmarshal(body, &ops); err != nil {
		return nil, errf(400, "Failed to parse body: %v", err)
	}
	if len(ops) > maxTxnOps {
		return nil, errf(413, "Transaction contains too many operations (%d > %d)", len(ops), maxTxnOps)
	}
	writes := false
	for i, op := range ops {
		if op.KV == nil {
			return nil, errf(400, "Operation %d: only KV operations are supported by this stand-in", i)
		}
		if len(op.KV.Value) > maxKVValueSize {
			return nil, errf(413, "Value for key %q is too large (%d > %d bytes)", op.KV.Key, len(op.KV.Value), maxKVValueSize)
		}
		switch op.KV.Verb {
		case "get", "get-tree", "check-index", "check-session", "check-not-exists":
		default:
			writes = true
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	// Pre-checks (lock-delay), all reported.
	var errs []txnError
	now := time.Now()
	for i, op := range ops {
		if op.KV.Verb == "lock" {
			if until, ok := s.st.lockDelay[op.KV.Key]; ok && now.Before(until) {
				errs = append(errs, txnError{i, "failed to lock key \"" + op.KV.Key + "\" due to lock delay"})
			}
		}
	}
	if len(errs) > 0 {
		writeJSON(w, r, http.StatusConflict, txnResponse{Errors: errs})
		return nil, errWritten
	}
	t := s.st.kvTxn()
	var results []txnResult
	for i, op := range ops {
		res, err := runTxnKV(t, op.KV)
		if err != nil {
			errs = append(errs, txnError{i, err.Error()})
			continue
		}
		results = append(results, res...)
	}
	if len(errs) > 0 {
		writeJSON(w, r, http.StatusConflict, txnResponse{Errors: errs})
		return nil, errWritten
	}
	if !writes {
		w.Header().Set("X-Consul-KnownLeader", "true")
		w.Header().Set("X-Consul-LastContact", "0")
		return txnReadResponse{txnResponse: txnResponse{Results: results}, KnownLeader: true}, nil
	}
	if t.changed {
		t.commit()
		s.commit()
	}
	return txnResponse{Results: results}, nil
}

// runTxnKV runs one KV op against t (Consul's state/txn.go txnKVS).
func runTxnKV(t *kvTxn, op *txnKVOp) ([]txnResult, error) {
	var entry *kvEntry
	var err error
	ok := true
	switch op.Verb {
	case "set":
		entry = t.set(op.Key, op.Value, op.Flags)
	case "cas":
		entry, ok = t.cas(op.Key, op.Value, op.Flags, op.Index)
		if !ok {
			return nil, fmt.Errorf("failed to set key %q, index is stale", op.Key)
		}
	case "lock":
		entry, ok, err = t.lock(op.Key, op.Value, op.Flags, op.Session)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("failed to lock key %q, lock is already held", op.Key)
		}
	case "unlock":
		entry, ok, err = t.unlock(op.Key, op.Value, op.Flags, op.Session)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("failed to unlock key %q, lock isn't held, or is held by another session", op.Key)
		}
	case "get":
		entry = t.get(op.Key)
		if entry == nil {
			return nil, fmt.Errorf("key %q doesn't exist", op.Key)
		}
	case "get-tree":
		var out []txnResult
		for _, e := range t.list(op.Key) {
			cp := *e
			out = append(out, txnResult{KV: &cp})
		}
		return out, nil
	case "check-session":
		entry = t.get(op.Key)
		if entry == nil {
			return nil, fmt.Errorf("failed to check session, key %q doesn't exist", op.Key)
		}
		if entry.Session != op.Session {
			return nil, fmt.Errorf("failed session check for key %q, current session %q != %q", op.Key, entry.Session, op.Session)
		}
	case "check-index":
		entry = t.get(op.Key)
		if entry == nil {
			return nil, fmt.Errorf("failed to check index, key %q doesn't exist", op.Key)
		}
		if entry.ModifyIndex != op.Index {
			return nil, fmt.Errorf("failed index check for key %q, current modify index %d != %d", op.Key, entry.ModifyIndex, op.Index)
		}
	case "check-not-exists":
		if t.get(op.Key) != nil {
			return nil, fmt.Errorf("key %q exists", op.Key)
		}
		return nil, nil
	case "delete":
		t.del(op.Key)
		return nil, nil
	case "delete-cas":
		if !t.delCAS(op.Key, op.Index) {
			return nil, fmt.Errorf("failed to delete key %q, index is stale", op.Key)
		}
		return nil, nil
	case "delete-tree":
		t.delTree(op.Key)
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown KV verb %q", op.Verb)
	}
	if entry == nil {
		return nil, nil
	}
	cp := *entry
	if op.Verb != "get" {
		cp.Value = nil
	}
	return []txnResult{{KV: &cp}}, nil
}

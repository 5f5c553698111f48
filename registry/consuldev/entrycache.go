package consuldev

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/hashicorp/consul/api"
)

// entryKey identifies one /v1/health/service entry: a service instance on
// a node.
type entryKey struct{ node, serviceID string }

// encodedEntry is the compact JSON of one api.ServiceEntry together with
// the catalog objects it was encoded from. It is valid while every one of
// them is still the stored object (same pointer) with the same ModifyIndex,
// and the instance has the same number of checks: the catalog primitives
// in state.go replace an object, or raise its ModifyIndex to a new index,
// whenever they change it. Its json is never modified once stored.
type encodedEntry struct {
	node    *api.Node
	nodeMod uint64
	svc     *api.AgentService
	svcMod  uint64
	checks  []checkStamp // node-level checks and the service's checks
	json    []byte
}

type checkStamp struct {
	c   *api.HealthCheck
	mod uint64
}

// cachedEntry returns the cached JSON of the entry of svc on n if it is
// still valid, else nil. Caller holds s.mu.
func (st *state) cachedEntry(n *api.Node, svc *api.AgentService) []byte {
	e := st.entryJSON[entryKey{n.Node, svc.ID}]
	if e == nil || e.node != n || e.nodeMod != n.ModifyIndex || e.svc != svc || e.svcMod != svc.ModifyIndex {
		return nil
	}
	bySvc := st.checksBySvc[n.Node]
	if len(bySvc[""])+len(bySvc[svc.ID]) != len(e.checks) {
		return nil
	}
	checks := st.Checks[n.Node]
	for _, cs := range e.checks {
		if checks[cs.c.CheckID] != cs.c || cs.c.ModifyIndex != cs.mod {
			return nil
		}
	}
	return e.json
}

// storeEntry encodes entry, the copy built from n, svc and the live checks
// of both, caches its JSON and returns it. Caller holds s.mu.
func (st *state) storeEntry(n *api.Node, svc *api.AgentService, entry *api.ServiceEntry) ([]byte, error) {
	b, err := compactJSON(entry)
	if err != nil {
		return nil, err
	}
	e := &encodedEntry{node: n, nodeMod: n.ModifyIndex, svc: svc, svcMod: svc.ModifyIndex, json: b}
	bySvc := st.checksBySvc[n.Node]
	for _, id := range []string{"", svc.ID} {
		for _, c := range bySvc[id] {
			e.checks = append(e.checks, checkStamp{c: c, mod: c.ModifyIndex})
		}
	}
	st.entryJSON[entryKey{n.Node, svc.ID}] = e
	return b, nil
}

// compactJSON is v as writeJSON encodes it (no HTML escaping), without the
// trailing newline.
func compactJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// jsonArray is a JSON array given as its encoded elements. writeJSON writes
// it exactly as json.Encoder would write the array of those values.
type jsonArray [][]byte

// write sends the array with a Content-Length.
func (a jsonArray) write(w http.ResponseWriter, code int) {
	n := 3 // "[", "]", "\n"
	for i, b := range a {
		if i > 0 {
			n++
		}
		n += len(b)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(code)
	buf := make([]byte, 0, 64<<10)
	buf = append(buf, '[')
	for i, b := range a {
		if i > 0 {
			buf = append(buf, ',')
		}
		if len(buf)+len(b) > cap(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
			buf = buf[:0]
		}
		buf = append(buf, b...)
	}
	buf = append(buf, ']', '\n')
	_, _ = w.Write(buf)
}

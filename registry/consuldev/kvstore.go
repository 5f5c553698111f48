package consuldev

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// kvTxn is a copy-on-write view of the KV table used by every KV write
// (single operations and /v1/txn). Nothing is visible to readers until
// commit. All operations run under Server.mu. One kvTxn uses one index.
type kvTxn struct {
	st      *state
	idx     uint64
	over    map[string]*kvEntry // nil value: deleted
	tombs   map[string]bool     // keys (or tree prefixes) to tombstone
	changed bool
}

func (st *state) kvTxn() *kvTxn {
	return &kvTxn{st: st, idx: st.Index + 1, over: map[string]*kvEntry{}, tombs: map[string]bool{}}
}

func (t *kvTxn) get(key string) *kvEntry {
	if e, ok := t.over[key]; ok {
		return e
	}
	return t.st.KV[key]
}

// list returns the entries under prefix in byte order of keys.
func (t *kvTxn) list(prefix string) []*kvEntry {
	keys := map[string]bool{}
	for k := range t.st.KV {
		if strings.HasPrefix(k, prefix) {
			keys[k] = true
		}
	}
	for k := range t.over {
		if strings.HasPrefix(k, prefix) {
			keys[k] = true
		}
	}
	out := make([]*kvEntry, 0, len(keys))
	for k := range keys {
		if e := t.get(k); e != nil {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// store writes e unless it equals the existing entry (Consul's
// DirEntry.Equal): then nothing changes and ModifyIndex stays.
func (t *kvTxn) store(e *kvEntry) *kvEntry {
	if old := t.get(e.Key); old != nil {
		if old.LockIndex == e.LockIndex && old.Flags == e.Flags && old.Session == e.Session && bytes.Equal(old.Value, e.Value) {
			return old
		}
		e.CreateIndex = old.CreateIndex
	} else {
		e.CreateIndex = t.idx
	}
	e.ModifyIndex = t.idx
	t.over[e.Key] = e
	t.changed = true
	return e
}

// set is a plain write: it keeps the lock (Session, LockIndex).
func (t *kvTxn) set(key string, value []byte, flags uint64) *kvEntry {
	e := &kvEntry{Key: key, Value: value, Flags: flags}
	if old := t.get(key); old != nil {
		e.Session, e.LockIndex = old.Session, old.LockIndex
	}
	return t.store(e)
}

// cas writes when index is 0 and the key is absent, or when the key's
// ModifyIndex equals index.
func (t *kvTxn) cas(key string, value []byte, flags, index uint64) (*kvEntry, bool) {
	old := t.get(key)
	if index == 0 && old != nil {
		return nil, false
	}
	if index != 0 && (old == nil || old.ModifyIndex != index) {
		return nil, false
	}
	return t.set(key, value, flags), true
}

// lock acquires key for session (Consul's kvsLockTxn).
func (t *kvTxn) lock(key string, value []byte, flags uint64, sess string) (*kvEntry, bool, error) {
	if sess == "" {
		return nil, false, fmt.Errorf("missing session")
	}
	if t.st.Sessions[sess] == nil {
		return nil, false, fmt.Errorf("invalid session %q", sess)
	}
	e := &kvEntry{Key: key, Value: value, Flags: flags, Session: sess, LockIndex: 1}
	if old := t.get(key); old != nil {
		switch old.Session {
		case sess:
			e.LockIndex = old.LockIndex
		case "":
			e.LockIndex = old.LockIndex + 1
		default:
			return nil, false, nil
		}
	}
	return t.store(e), true, nil
}

// unlock releases key held by session (Consul's kvsUnlockTxn).
func (t *kvTxn) unlock(key string, value []byte, flags uint64, sess string) (*kvEntry, bool, error) {
	if sess == "" {
		return nil, false, fmt.Errorf("missing session")
	}
	old := t.get(key)
	if old == nil || old.Session != sess {
		return nil, false, nil
	}
	return t.store(&kvEntry{Key: key, Value: value, Flags: flags, LockIndex: old.LockIndex}), true, nil
}

// del deletes key if present (with a tombstone at this txn's index).
func (t *kvTxn) del(key string) {
	if t.get(key) == nil {
		return
	}
	t.over[key] = nil
	t.tombs[key] = true
	t.changed = true
}

// delCAS deletes key if its ModifyIndex equals index. A missing key counts
// as success, like in Consul.
func (t *kvTxn) delCAS(key string, index uint64) bool {
	old := t.get(key)
	if old == nil {
		return true
	}
	if old.ModifyIndex != index {
		return false
	}
	t.del(key)
	return true
}

// delTree deletes every key under prefix; one tombstone marks the prefix.
func (t *kvTxn) delTree(prefix string) {
	entries := t.list(prefix)
	if len(entries) == 0 {
		return
	}
	for _, e := range entries {
		t.over[e.Key] = nil
	}
	if prefix != "" {
		t.tombs[prefix] = true
	}
	t.changed = true
}

// commit applies the view to the state and allocates the index.
func (t *kvTxn) commit() {
	if !t.changed {
		return
	}
	st := t.st
	st.Index = t.idx
	for k, e := range t.over {
		if e == nil {
			delete(st.KV, k)
		} else {
			st.KV[k] = e
		}
	}
	for k := range t.tombs {
		st.Tombstones[k] = t.idx
	}
	st.touch(t.idx, tKVS)
	if len(t.tombs) > 0 {
		st.touch(t.idx, tTombstones)
	}
}

// kvPrefixIndex is the index of a prefix listing: the highest ModifyIndex or
// tombstone under prefix, falling back to the KV table index.
func (st *state) kvPrefixIndex(prefix string, entries []*kvEntry) uint64 {
	var idx uint64
	if prefix != "" {
		for _, e := range entries {
			if e.ModifyIndex > idx {
				idx = e.ModifyIndex
			}
		}
		for k, v := range st.Tombstones {
			if v > idx && strings.HasPrefix(k, prefix) {
				idx = v
			}
		}
	}
	if idx == 0 {
		idx = st.maxIndex(tKVS, tTombstones)
	}
	return idx
}

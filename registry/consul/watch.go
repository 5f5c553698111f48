package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
)

// Watch defaults.
const (
	DefaultWaitTime   = time.Minute
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// WatchOptions configures a Watcher. The zero value is usable.
type WatchOptions struct {
	// Logger receives errors and recoveries; default slog.Default().
	Logger *slog.Logger
	// OnSnapshot, when set, is called with every snapshot right after it is
	// published, one call at a time, in Generation order, on the watcher's
	// own goroutine. It must not block for long: changes that arrive while it
	// runs are coalesced into the next snapshot.
	OnSnapshot func(*registry.Snapshot)
	// WaitTime is the longest a blocking query waits for a change; default
	// DefaultWaitTime. It also bounds how long a silently broken connection
	// goes unnoticed (about WaitTime·17/16 + 5s).
	WaitTime time.Duration
	// MinBackoff and MaxBackoff bound the pause after failed queries; it
	// doubles from MinBackoff up to MaxBackoff, with jitter. Defaults
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
}

// Stats are the watcher's counters, for metrics. All counters only grow.
type Stats struct {
	Generation     uint64        // of the last published snapshot; 0 before the first
	Tenants        int           // valid records in the last snapshot
	Instances      int           // app instances in the last snapshot
	InvalidRecords int           // malformed records in the last snapshot
	Malformed      uint64        // malformed records found; a record counts again only after it changes
	Queries        uint64        // successful Consul queries
	Errors         uint64        // failed Consul queries
	IndexResets    uint64        // times an index went backwards and was reset
	Age            time.Duration // as returned by Age
}

// Watcher follows the whole fleet in Consul with three blocking-query loops
// (the tenant records under registry.KeyPrefix, and the health of
// registry.ServiceApp and registry.ServiceAdmin, all instances) and publishes
// an immutable *registry.Snapshot whenever what it holds changes (an answer
// that differs only in fields the snapshot does not keep, such as a check's
// output, publishes nothing). Changes that arrive while a snapshot is being
// built or delivered are coalesced into the next one; a single change is
// never delayed. A tenant whose instances did not change keeps the same
// Instances slice from one snapshot to the next.
//
// Errors never reach the snapshot: a failed query is retried with jittered
// exponential backoff and the last good snapshot stays published, with its
// Age growing. After an error a loop resynchronizes with a non-blocking
// query; an index that goes backwards is reset. A malformed record is logged,
// counted and listed in Snapshot.Invalid; the other records are unaffected.
//
// A Watcher is safe for concurrent use. Run it once.
type Watcher struct {
	c       *api.Client
	log     *slog.Logger
	onSnap  func(*registry.Snapshot)
	wait    time.Duration
	minBack time.Duration
	maxBack time.Duration

	snap      atomic.Pointer[registry.Snapshot]
	ready     chan struct{}
	readyOnce sync.Once
	running   atomic.Bool
	started   atomic.Int64 // unix nanos when Run began
	kick      chan struct{}

	mu    sync.Mutex // guards parts
	parts parts

	loops     [numSources]loopState
	queries   atomic.Uint64
	errors    atomic.Uint64
	resets    atomic.Uint64
	malformed atomic.Uint64
	decoder   decoder // used by the KV loop only
}

// parts holds the latest answer of each loop. The maps and slices are never
// modified after they are stored here, so snapshots share them.
type parts struct {
	have    [numSources]bool
	tenants map[string]*registry.Tenant
	invalid map[string]string
	apps    map[string][]registry.Instance
	admins  []registry.Instance
}

type loopState struct {
	lastOK  atomic.Int64 // unix nanos of the last successful query; 0 = never
	failing atomic.Bool  // the last query failed
}

type source int

const (
	sourceKV source = iota
	sourceApp
	sourceAdmin
	numSources
)

func (s source) String() string {
	switch s {
	case sourceKV:
		return "kv:" + registry.KeyPrefix
	case sourceApp:
		return "health:" + registry.ServiceApp
	case sourceAdmin:
		return "health:" + registry.ServiceAdmin
	}
	return fmt.Sprintf("source(%d)", int(s))
}

// NewWatcher returns a Watcher on c; call Run to start it. c must not be nil.
// The result is never nil.
func NewWatcher(c *api.Client, o WatchOptions) *Watcher {
	w := &Watcher{
		c:       c,
		log:     o.Logger,
		onSnap:  o.OnSnapshot,
		wait:    o.WaitTime,
		minBack: o.MinBackoff,
		maxBack: o.MaxBackoff,
		ready:   make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.wait <= 0 {
		w.wait = DefaultWaitTime
	}
	if w.minBack <= 0 {
		w.minBack = DefaultMinBackoff
	}
	if w.maxBack <= 0 {
		w.maxBack = DefaultMaxBackoff
	}
	if w.maxBack < w.minBack {
		w.maxBack = w.minBack
	}
	return w
}

// Run watches until ctx is done, then waits for its goroutines to exit and
// returns nil. Consul errors never make it return early. It returns an error
// only when the Watcher is already running or has run.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("consul: watcher: Run called twice")
	}
	w.started.Store(time.Now().UnixNano())
	w.log.Debug("consul watch starting", "wait", w.wait)
	var wg sync.WaitGroup
	for s := range numSources {
		wg.Go(func() { w.loop(ctx, s) })
	}
	wg.Go(func() { w.build(ctx) })
	wg.Wait()
	w.log.Debug("consul watch stopped")
	return nil
}

// Snapshot returns the last published snapshot, nil until the first one.
// The snapshot must not be modified.
func (w *Watcher) Snapshot() *registry.Snapshot { return w.snap.Load() }

// Ready returns a channel that is closed when the first snapshot is
// published, which happens once each of the three queries has answered.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Age reports how stale the published snapshot may be. It is 0 while every
// blocking query is healthy (a change reaches a new snapshot within
// milliseconds). While a query is failing, it is the time since the oldest
// failing query last succeeded (since Run began, if it never did). Before the
// first snapshot it is the time since Run began; 0 if Run has not begun.
func (w *Watcher) Age() time.Duration {
	start := w.started.Load()
	if start == 0 {
		return 0
	}
	now := time.Now()
	oldest := int64(0)
	for i := range w.loops {
		l := &w.loops[i]
		if !l.failing.Load() {
			continue
		}
		t := l.lastOK.Load()
		if t == 0 {
			t = start
		}
		if oldest == 0 || t < oldest {
			oldest = t
		}
	}
	if w.snap.Load() == nil {
		oldest = start
	}
	if oldest == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, oldest))
}

// Stats returns the current counters.
func (w *Watcher) Stats() Stats {
	st := Stats{
		Malformed:   w.malformed.Load(),
		Queries:     w.queries.Load(),
		Errors:      w.errors.Load(),
		IndexResets: w.resets.Load(),
		Age:         w.Age(),
	}
	if s := w.snap.Load(); s != nil {
		st.Generation = s.Generation
		st.Tenants = len(s.Tenants)
		st.InvalidRecords = len(s.Invalid)
		for _, is := range s.Instances {
			st.Instances += len(is)
		}
	}
	return st
}

// loop runs the blocking queries of one source until ctx is done.
func (w *Watcher) loop(ctx context.Context, src source) {
	state := &w.loops[src]
	var index uint64
	failures := 0
	for ctx.Err() == nil {
		// The server answers within wait + wait/16; the extra margin turns a
		// silently dead connection into an error instead of a hang.
		rctx, cancel := context.WithTimeout(ctx, w.wait+w.wait/16+5*time.Second)
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: w.wait}).WithContext(rctx)
		got, err := w.query(src, q)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.errors.Add(1)
			state.failing.Store(true)
			failures++
			d := backoff(w.minBack, w.maxBack, failures)
			w.log.Warn("consul watch query failed; keeping the last snapshot",
				"source", src.String(), "err", err, "failures", failures, "retry_in", d.Round(time.Millisecond))
			index = 0 // resynchronize with a non-blocking query
			if sleepCtx(ctx, d) != nil {
				return
			}
			continue
		}
		w.queries.Add(1)
		state.lastOK.Store(time.Now().UnixNano())
		if failures > 0 {
			w.log.Info("consul watch recovered", "source", src.String(), "failures", failures)
			failures = 0
		}
		next, changed, reset := nextIndex(index, got.index)
		if reset {
			w.resets.Add(1)
			w.log.Info("consul watch index went backwards; resetting", "source", src.String(), "was", index, "now", got.index)
		}
		index = next
		if changed {
			w.apply(src, got)
		}
		state.failing.Store(false)
	}
}

// result is one answer of a source's query.
type result struct {
	index   uint64
	pairs   api.KVPairs
	entries []healthEntry
}

// healthEntry is the part of a /v1/health/service answer the watcher uses.
// Decoding into it rather than []*api.ServiceEntry skips the fields the
// snapshot does not need, which saves most of the client's CPU per change
// at 1,000 tenants (see docs/bench/registry.md).
type healthEntry struct {
	Node struct {
		Node    string
		Address string
	}
	Service struct {
		ID      string
		Address string
		Port    int
		Meta    map[string]string
	}
	Checks []struct {
		CheckID string
		Status  string
	}
}

func (w *Watcher) query(src source, q *api.QueryOptions) (result, error) {
	var (
		r    result
		meta *api.QueryMeta
		err  error
	)
	switch src {
	case sourceKV:
		r.pairs, meta, err = w.c.KV().List(registry.KeyPrefix, q)
	case sourceApp:
		meta, err = w.c.Raw().Query("/v1/health/service/"+registry.ServiceApp, &r.entries, q)
	case sourceAdmin:
		meta, err = w.c.Raw().Query("/v1/health/service/"+registry.ServiceAdmin, &r.entries, q)
	}
	if err != nil {
		return r, err
	}
	r.index = meta.LastIndex
	return r, nil
}

// nextIndex applies Consul's blocking-query index rules: given the index a
// query was sent with (prev) and the index it returned (got), it returns the
// index for the next query, whether the answer may hold a change, and whether
// the index went backwards (then the next query starts over from 0 and the
// answer, which is current, is still used). The next index is never 0 unless
// reset.
func nextIndex(prev, got uint64) (next uint64, changed, reset bool) {
	switch {
	case got < prev:
		return 0, true, true
	case got == prev && prev != 0:
		return prev, false, false
	}
	return max(got, 1), true, false
}

// apply stores a changed answer and wakes the builder, unless the answer
// leaves the snapshot's contents as they are.
func (w *Watcher) apply(src source, r result) {
	switch src {
	case sourceKV:
		tenants, invalid, fresh := w.decoder.decodeFresh(r.pairs)
		for _, key := range fresh {
			w.malformed.Add(1)
			w.log.Error("skipping malformed tenant record", "key", key, "reason", invalid[key])
		}
		w.mu.Lock()
		w.parts.tenants, w.parts.invalid = tenants, invalid
		w.parts.have[src] = true
		w.mu.Unlock()
	case sourceApp:
		apps, skipped := groupByTenant(r.entries)
		if skipped > 0 {
			w.log.Warn("app instances without tenant meta are ignored", "service", registry.ServiceApp, "meta_key", registry.MetaTenant, "count", skipped)
		}
		w.mu.Lock()
		same := w.parts.have[src] && reuseUnchanged(apps, w.parts.apps)
		if !same {
			w.parts.apps = apps
			w.parts.have[src] = true
		}
		w.mu.Unlock()
		if same {
			return // e.g. only a check's output changed: no new snapshot
		}
	case sourceAdmin:
		admins := make([]registry.Instance, 0, len(r.entries))
		for i := range r.entries {
			admins = append(admins, toInstance(registry.ServiceAdmin, "", &r.entries[i]))
		}
		sortInstances(admins)
		w.mu.Lock()
		same := w.parts.have[src] && slices.Equal(admins, w.parts.admins)
		if !same {
			w.parts.admins = admins
			w.parts.have[src] = true
		}
		w.mu.Unlock()
		if same {
			return
		}
	}
	select {
	case w.kick <- struct{}{}:
	default: // a rebuild is already pending; it will see this answer
	}
}

// build publishes a new snapshot after every change until ctx is done.
// Changes that arrive during a build are coalesced into the next one.
func (w *Watcher) build(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		w.mu.Lock()
		p := w.parts
		w.mu.Unlock()
		if !p.have[sourceKV] || !p.have[sourceApp] || !p.have[sourceAdmin] {
			continue // the first snapshot waits for every query's first answer
		}
		var gen uint64 = 1
		if prev := w.snap.Load(); prev != nil {
			gen = prev.Generation + 1
		}
		s := &registry.Snapshot{
			Generation: gen,
			BuiltAt:    time.Now(),
			Tenants:    p.tenants,
			Instances:  p.apps,
			Admins:     p.admins,
			Invalid:    p.invalid,
		}
		w.snap.Store(s)
		w.readyOnce.Do(func() { close(w.ready) })
		if w.onSnap != nil {
			w.callOnSnapshot(s)
		}
	}
}

func (w *Watcher) callOnSnapshot(s *registry.Snapshot) {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("consul watch: OnSnapshot panicked", "generation", s.Generation, "panic", r)
		}
	}()
	w.onSnap(s)
}

// groupByTenant returns the app instances by Meta[registry.MetaTenant], each
// group sorted by ID, and the number of entries without that meta.
func groupByTenant(entries []healthEntry) (map[string][]registry.Instance, int) {
	apps := make(map[string][]registry.Instance)
	skipped := 0
	for i := range entries {
		e := &entries[i]
		slug := e.Service.Meta[registry.MetaTenant]
		if slug == "" {
			skipped++
			continue
		}
		apps[slug] = append(apps[slug], toInstance(registry.ServiceApp, slug, e))
	}
	for _, is := range apps {
		sortInstances(is)
	}
	return apps, skipped
}

// reuseUnchanged replaces each group in next that equals the group of the
// same tenant in prev by prev's slice, so that snapshots share the slices of
// tenants whose instances did not change (consumers may compare them by
// identity to skip work). It reports whether next and prev hold the same
// instances. prev is not modified; both are sorted by groupByTenant.
func reuseUnchanged(next, prev map[string][]registry.Instance) bool {
	same := len(next) == len(prev)
	for slug, is := range next {
		if old, ok := prev[slug]; ok && slices.Equal(old, is) {
			next[slug] = old
			continue
		}
		same = false
	}
	return same
}

func toInstance(service, tenant string, e *healthEntry) registry.Instance {
	in := registry.Instance{
		ID:      e.Service.ID,
		Service: service,
		Tenant:  tenant,
		Node:    e.Node.Node,
		Address: e.Service.Address,
		Port:    e.Service.Port,
		Version: e.Service.Meta[registry.MetaVersion],
		Health:  aggregate(e),
	}
	if in.Address == "" {
		in.Address = e.Node.Address
	}
	return in
}

// aggregate is the instance's health, as api.HealthChecks.AggregatedStatus
// computes it: critical if any check (node checks included) is critical, in
// maintenance or of an unknown status; else warning if any is warning; else
// passing, also when there are no checks.
func aggregate(e *healthEntry) registry.Health {
	h := registry.HealthPassing
	for _, c := range e.Checks {
		if c.CheckID == api.NodeMaint || strings.HasPrefix(c.CheckID, api.ServiceMaintPrefix) {
			return registry.HealthCritical
		}
		switch c.Status {
		case api.HealthPassing:
		case api.HealthWarning:
			h = registry.HealthWarning
		default:
			return registry.HealthCritical
		}
	}
	return h
}

func sortInstances(is []registry.Instance) {
	slices.SortFunc(is, func(a, b registry.Instance) int { return strings.Compare(a.ID, b.ID) })
}

// backoff returns the pause after the n-th consecutive failure (n ≥ 1):
// min·2^(n-1) capped at max, then jittered to a random value in [d/2, d).
func backoff(minD, maxD time.Duration, n int) time.Duration {
	d := minD
	for i := 1; i < n && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half)
}

package admin_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"stagesub.dev/admin"
	"stagesub.dev/registry"
)

// Source is a fake admin.StatsSource keyed by database name.
type Source struct {
	mu      sync.Mutex
	stats   map[string]admin.DBStats
	fail    map[string]error
	block   map[string]bool          // wait for ctx to end
	gate    map[string]chan struct{} // wait until closed (or ctx ends)
	calls   atomic.Int64
	running atomic.Int64
	peak    atomic.Int64
	started chan string // optional: receives the database of every call
	ended   chan string // optional: receives the database when a call returns
	delay   time.Duration
}

func NewSource() *Source {
	return &Source{stats: map[string]admin.DBStats{}, fail: map[string]error{}, block: map[string]bool{},
		gate: map[string]chan struct{}{}}
}

func (s *Source) Set(db string, st admin.DBStats, err error, block bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats[db], s.fail[db], s.block[db] = st, err, block
}

// Gate makes reads of db wait until the returned channel is closed.
func (s *Source) Gate(db string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := make(chan struct{})
	s.gate[db] = g
	return g
}

func (s *Source) FetchStats(ctx context.Context, db registry.Database) (admin.DBStats, error) {
	s.calls.Add(1)
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	if s.started != nil {
		s.started <- db.Name
	}
	if s.ended != nil {
		defer func() { s.ended <- db.Name }()
	}
	s.mu.Lock()
	st, err, block, gate := s.stats[db.Name], s.fail[db.Name], s.block[db.Name], s.gate[db.Name]
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return admin.DBStats{}, ctx.Err()
		}
	}
	if block {
		<-ctx.Done()
		return admin.DBStats{}, ctx.Err()
	}
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return admin.DBStats{}, ctx.Err()
		}
	}
	return st, err
}

func snapshot(slugs ...string) *registry.Snapshot {
	s := &registry.Snapshot{Tenants: map[string]*registry.Tenant{}, Instances: map[string][]registry.Instance{}}
	for _, slug := range slugs {
		s.Tenants[slug] = &registry.Tenant{Slug: slug, Name: "Orchestra " + slug, Status: registry.StatusActive,
			Database: registry.Database{Name: registry.DatabaseName(slug)}}
	}
	return s
}

func TestCollect(t *testing.T) {
	src := NewSource()
	last := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	src.Set("orchestra_aa", admin.DBStats{Musicians: 10, Projects: 2, OpenRequests: 3, SizeBytes: 100, SchemaVersion: 1, LastActivity: &last}, nil, false)
	src.Set("orchestra_bb", admin.DBStats{Musicians: 5, Projects: 1, OpenRequests: 0, SizeBytes: 50}, nil, false)
	src.Set("orchestra_cc", admin.DBStats{}, errors.New("connection refused"), false)
	src.Set("orchestra_dd", admin.DBStats{}, nil, true)
	snap := snapshot("aa", "bb", "cc", "dd")
	snap.Tenants["bb"].Status = registry.StatusSuspended
	snap.Instances["aa"] = []registry.Instance{{ID: "1", Health: registry.HealthPassing}, {ID: "2", Health: registry.HealthCritical}}

	c := &admin.Collector{Source: src, Timeout: 100 * time.Millisecond,
		PanelURL: func(s string) string { return "https://" + s + ".example.com/" }}
	rep, err := c.Collect(context.Background(), snap, nil)
	if err != nil {
		t.Fatal(err)
	}
	tot := rep.Totals
	for _, tt := range []struct {
		what      string
		got, want int64
	}{
		{"customers", int64(tot.Customers), 4},
		{"active", int64(tot.CustomersByStatus[registry.StatusActive]), 3},
		{"suspended", int64(tot.CustomersByStatus[registry.StatusSuspended]), 1},
		{"musicians", tot.Musicians, 15},
		{"projects", tot.Projects, 3},
		{"open requests", tot.OpenRequests, 3},
		{"bytes", tot.DatabaseBytes, 150},
		{"reachable", int64(tot.Reachable), 2},
		{"unreachable", int64(tot.Unreachable), 2},
	} {
		if tt.got != tt.want {
			t.Errorf("totals %s = %d, want %d", tt.what, tt.got, tt.want)
		}
	}
	if got, want := len(rep.Tenants), 4; got != want {
		t.Fatalf("rows = %d, want %d", got, want)
	}
	aa := rep.Tenant("aa")
	if got, want := aa.PanelURL, "https://aa.example.com/"; got != want {
		t.Errorf("panel = %q, want %q", got, want)
	}
	if aa.InstancesPassing != 1 || aa.InstancesTotal != 2 {
		t.Errorf("instances = %d/%d, want 1/2", aa.InstancesPassing, aa.InstancesTotal)
	}
	if !aa.Reachable || aa.LastActivity == nil || !aa.LastActivity.Equal(last) || aa.StatsAt == nil {
		t.Errorf("aa = %+v, want reachable with last activity", aa)
	}
	cc := rep.Tenant("cc")
	if cc.Reachable || cc.TimedOut || cc.Error != "connection refused" || cc.Failures != 1 {
		t.Errorf("cc = %+v, want unreachable, not timed out, 1 failure", cc)
	}
	dd := rep.Tenant("dd")
	if dd.Reachable || !dd.TimedOut || dd.Failures != 1 {
		t.Errorf("dd = %+v, want timed out", dd)
	}

	t.Run("KeepsLastGoodNumbers", func(t *testing.T) {
		src.Set("orchestra_aa", admin.DBStats{}, errors.New("down"), false)
		src.Set("orchestra_cc", admin.DBStats{Musicians: 1}, nil, false)
		rep2, err := c.Collect(context.Background(), snap, rep)
		if err != nil {
			t.Fatal(err)
		}
		aa2 := rep2.Tenant("aa")
		if aa2.Reachable || aa2.Musicians != 10 || aa2.StatsAt == nil || !aa2.StatsAt.Equal(*aa.StatsAt) || aa2.Failures != 1 {
			t.Errorf("aa = %+v, want unreachable with the numbers of the last read", aa2)
		}
		if got, want := rep2.Totals.Musicians, int64(5+1); got != want {
			t.Errorf("musicians = %d, want %d (only reachable tenants)", got, want)
		}
		if got, want := rep2.Tenant("cc").Failures, uint64(1); got != want {
			t.Errorf("cc failures = %d, want %d (cumulative)", got, want)
		}
		if got, want := rep2.Tenant("dd").Failures, uint64(2); got != want {
			t.Errorf("dd failures = %d, want %d", got, want)
		}
	})
}

// TestCollectBounded checks that at most Concurrency reads run at once, and
// that slow tenants cost their timeout in parallel, not one after another.
func TestCollectBounded(t *testing.T) {
	src := NewSource()
	src.delay = 20 * time.Millisecond
	var slugs []string
	for i := 0; i < 100; i++ {
		slugs = append(slugs, "t"+string(rune('a'+i/26))+string(rune('a'+i%26)))
	}
	snap := snapshot(slugs...)
	for _, s := range slugs[:16] {
		src.Set(registry.DatabaseName(s), admin.DBStats{}, nil, true) // all slow
	}
	c := &admin.Collector{Source: src, Concurrency: 16, Timeout: 200 * time.Millisecond}
	rep, err := c.Collect(context.Background(), snap, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := src.peak.Load(), int64(16); got != want {
		t.Errorf("peak concurrent reads = %d, want %d", got, want)
	}
	if got, want := rep.Totals.Unreachable, 16; got != want {
		t.Errorf("unreachable = %d, want %d", got, want)
	}
	// 16 slow tenants time out together (one timeout), then 84 fast ones in
	// 6 waves of 20 ms; serially it would be 16*200 ms.
	if rep.Duration > 3*time.Second {
		t.Errorf("refresh took %s: slow tenants were not read in parallel", rep.Duration)
	}
}

func TestCollectCancelled(t *testing.T) {
	src := NewSource()
	src.Set("orchestra_aa", admin.DBStats{}, nil, true)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := (&admin.Collector{Source: src}).Collect(ctx, snapshot("aa", "bb"), nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if got := src.calls.Load(); got != 0 {
		t.Errorf("reads started after the refresh was cancelled = %d, want 0", got)
	}
	if _, err := (&admin.Collector{Source: src}).Collect(context.Background(), nil, nil); !errors.Is(err, admin.ErrNoSnapshot) {
		t.Errorf("err = %v, want ErrNoSnapshot", err)
	}
}

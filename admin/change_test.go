package admin_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"stagesub.dev/admin"
	"stagesub.dev/registry"
)

// Activity is a fake admin.ActivitySource: counters per server key
// ("host:port") and database name.
type Activity struct {
	mu       sync.Mutex
	servers  map[string]map[string]admin.DBActivity
	fail     map[string]error // by server key
	failDB   map[string]error // by the database read through
	calls    atomic.Int64
	inflight atomic.Int64
}

func NewActivity() *Activity {
	return &Activity{servers: map[string]map[string]admin.DBActivity{}, fail: map[string]error{}, failDB: map[string]error{}}
}

func (a *Activity) ServerKey(db registry.Database) string {
	return db.Host + ":" + string(rune('0'+db.Port%10))
}

func (a *Activity) Set(key, db string, act admin.DBActivity) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.servers[key] == nil {
		a.servers[key] = map[string]admin.DBActivity{}
	}
	a.servers[key][db] = act
}

func (a *Activity) ReadActivity(ctx context.Context, db registry.Database) (map[string]admin.DBActivity, error) {
	a.calls.Add(1)
	a.inflight.Add(1)
	defer a.inflight.Add(-1)
	a.mu.Lock()
	defer a.mu.Unlock()
	key := a.ServerKey(db)
	if err := a.fail[key]; err != nil {
		return nil, err
	}
	if err := a.failDB[db.Name]; err != nil {
		return nil, err
	}
	out := map[string]admin.DBActivity{}
	for k, v := range a.servers[key] {
		out[k] = v
	}
	return out, nil
}

// countingSource counts reads per database and checks that no read starts
// while counters are being read (the baseline must precede the query).
type countingSource struct {
	*Source
	act   *Activity
	mu    sync.Mutex
	reads map[string]int
	early atomic.Int64
}

func (s *countingSource) FetchStats(ctx context.Context, db registry.Database) (admin.DBStats, error) {
	if s.act.inflight.Load() != 0 {
		s.early.Add(1)
	}
	s.mu.Lock()
	s.reads[db.Name]++
	s.mu.Unlock()
	return s.Source.FetchStats(ctx, db)
}

func (s *countingSource) take() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reads
	s.reads = map[string]int{}
	return r
}

// TestCollectChangeDetection: a second refresh queries a tenant only when
// its counters moved (or can't be trusted), and keeps the others' rows.
func TestCollectChangeDetection(t *testing.T) {
	base := admin.DBActivity{OID: 16384, TupInserted: 100, TupUpdated: 10, TupDeleted: 1, StatsReset: 0, Connectable: true}
	other := admin.DBActivity{OID: 16385, TupInserted: 7, Connectable: true}
	// moved is a change that edits aa's counters on its server.
	moved := func(edit func(b *admin.DBActivity)) func(*Activity, *Source, *registry.Snapshot) {
		return func(a *Activity, _ *Source, _ *registry.Snapshot) {
			b := base
			edit(&b)
			a.Set("h:1", "orchestra_aa", b)
		}
	}
	tests := []struct {
		name          string
		change        func(a *Activity, src *Source, snap *registry.Snapshot) // before the second refresh
		advance       time.Duration                                           // clock moves by this before the second refresh
		failFirst     bool                                                    // aa's first read fails
		wantQueried   bool                                                    // aa queried in the second refresh
		wantMusicians int64                                                   // aa's musicians after it
		wantActFails  int
		bbQueried     bool // bb (on another server) queried too
	}{
		{name: "Unchanged", wantMusicians: 10},
		{name: "Inserted", change: moved(func(b *admin.DBActivity) { b.TupInserted++ }), wantQueried: true, wantMusicians: 11},
		{name: "Updated", change: moved(func(b *admin.DBActivity) { b.TupUpdated++ }), wantQueried: true, wantMusicians: 11},
		{name: "Deleted", change: moved(func(b *admin.DBActivity) { b.TupDeleted++ }), wantQueried: true, wantMusicians: 11},
		{name: "StatsReset", change: moved(func(b *admin.DBActivity) {
			b.TupInserted, b.TupUpdated, b.TupDeleted, b.StatsReset = 0, 0, 0, time.Now().UnixMicro()
		}), wantQueried: true, wantMusicians: 11},
		{name: "Recreated", change: moved(func(b *admin.DBActivity) { b.OID++ }), wantQueried: true, wantMusicians: 11},
		{name: "NotConnectable", change: func(a *Activity, src *Source, _ *registry.Snapshot) {
			b := base
			b.Connectable = false
			a.Set("h:1", "orchestra_aa", b)
			src.Set("orchestra_aa", admin.DBStats{}, errors.New("permission denied"), false)
		}, wantQueried: true, wantMusicians: 10},
		{name: "MissingFromServer", change: func(a *Activity, _ *Source, _ *registry.Snapshot) {
			a.mu.Lock()
			delete(a.servers["h:1"], "orchestra_aa")
			a.mu.Unlock()
		}, wantQueried: true, wantMusicians: 11},
		{name: "ServerReadFails", change: func(a *Activity, _ *Source, _ *registry.Snapshot) {
			a.mu.Lock()
			a.fail["h:1"] = errors.New("connection refused")
			a.mu.Unlock()
		}, wantQueried: true, wantMusicians: 11, wantActFails: 1},
		{name: "MovedToAnotherServer", change: func(a *Activity, _ *Source, snap *registry.Snapshot) {
			a.Set("h:2", "orchestra_aa", base) // same counters, other server
			snap.Tenants["aa"].Database.Port = 2
		}, wantQueried: true, wantMusicians: 11},
		{name: "FullEveryPassed", advance: 10 * time.Minute, wantQueried: true, wantMusicians: 11, bbQueried: true},
		{name: "FullEveryNotYet", advance: 10*time.Minute/2 - 2*time.Second, wantMusicians: 10},
		{name: "PreviousReadFailed", failFirst: true, wantQueried: true, wantMusicians: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			act := NewActivity()
			act.Set("h:1", "orchestra_aa", base)
			act.Set("h:3", "orchestra_bb", other)
			src := &countingSource{Source: NewSource(), act: act, reads: map[string]int{}}
			src.Set("orchestra_aa", admin.DBStats{Musicians: 10, SizeBytes: 1000}, nil, false)
			if tt.failFirst {
				src.Set("orchestra_aa", admin.DBStats{}, errors.New("down"), false)
			}
			src.Set("orchestra_bb", admin.DBStats{Musicians: 5, SizeBytes: 500}, nil, false)
			snap := snapshot("aa", "bb")
			snap.Tenants["aa"].Database.Host, snap.Tenants["aa"].Database.Port = "h", 1
			snap.Tenants["bb"].Database.Host, snap.Tenants["bb"].Database.Port = "h", 3
			clock := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
			c := &admin.Collector{Source: src, Activity: act, Now: func() time.Time { return clock }}

			rep1, err := c.Collect(context.Background(), snap, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rep1.Queried, 2; got != want {
				t.Errorf("first refresh queried = %d, want %d", got, want)
			}
			src.take()
			// The data changes in every case; only a query can see it.
			src.Set("orchestra_aa", admin.DBStats{Musicians: 11, SizeBytes: 1100}, nil, false)
			if tt.change != nil {
				tt.change(act, src.Source, snap)
			}
			clock = clock.Add(tt.advance + time.Second)

			rep2, err := c.Collect(context.Background(), snap, rep1)
			if err != nil {
				t.Fatal(err)
			}
			reads := src.take()
			aa, bb := rep2.Tenant("aa"), rep2.Tenant("bb")
			wantQueried, bbQueried := 0, 0
			if tt.wantQueried {
				wantQueried = 1
			}
			if tt.bbQueried {
				bbQueried = 1
			}
			for _, c := range []struct {
				what      string
				got, want int64
			}{
				{"aa reads", int64(reads["orchestra_aa"]), int64(wantQueried)},
				{"bb reads", int64(reads["orchestra_bb"]), int64(bbQueried)},
				{"aa musicians", aa.Musicians, tt.wantMusicians},
				{"report queried", int64(rep2.Queried), int64(wantQueried + bbQueried)},
				{"report unchanged", int64(rep2.Unchanged), int64(2 - wantQueried - bbQueried)},
				{"activity failures", int64(rep2.ActivityFailures), int64(tt.wantActFails)},
				{"reads before counters", src.early.Load(), 0},
			} {
				if c.got != c.want {
					t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
				}
			}
			if !tt.bbQueried && !bb.Unchanged || !bb.Reachable || bb.VerifiedAt == nil || !bb.VerifiedAt.Equal(rep2.StartedAt) ||
				!tt.bbQueried && !bb.StatsAt.Equal(*rep1.Tenant("bb").StatsAt) {
				t.Errorf("bb = %+v, want unchanged, verified now, numbers from the first refresh", bb)
			}
			if got, want := aa.Unchanged, !tt.wantQueried; got != want {
				t.Errorf("aa unchanged = %v, want %v", got, want)
			}
			// Totals stay exact: they count kept rows like queried ones.
			wantTotal := tt.wantMusicians + 5
			if !aa.Reachable {
				wantTotal = 5
			}
			if got := rep2.Totals.Musicians; got != wantTotal {
				t.Errorf("total musicians = %d, want %d", got, wantTotal)
			}
		})
	}
}

// TestCollectChangeDetectionOneReadPerServer: the counters are read once
// per server, however many tenants it holds.
func TestCollectChangeDetectionOneReadPerServer(t *testing.T) {
	act := NewActivity()
	src := NewSource()
	snap := snapshot("aa", "bb", "cc", "dd")
	for slug, tn := range snap.Tenants {
		tn.Database.Host, tn.Database.Port = "h", 1
		if slug == "dd" {
			tn.Database.Port = 2
		}
		act.Set(act.ServerKey(tn.Database), tn.Database.Name, admin.DBActivity{OID: 1, Connectable: true})
	}
	c := &admin.Collector{Source: src, Activity: act}
	rep, err := c.Collect(context.Background(), snap, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := act.calls.Load(), int64(2); got != want {
		t.Errorf("counter reads = %d, want %d (one per server)", got, want)
	}
	rep2, err := c.Collect(context.Background(), snap, rep)
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Queried != 0 || rep2.Unchanged != 4 {
		t.Errorf("second refresh queried/unchanged = %d/%d, want 0/4", rep2.Queried, rep2.Unchanged)
	}
	if got, want := src.calls.Load(), int64(4); got != want {
		t.Errorf("tenant reads = %d, want %d (first refresh only)", got, want)
	}
}

// TestCollectChangeDetectionReadThrough: a server's counters are read
// through another tenant database when the first refuses, trying at most
// three, tenants that answered last time first.
func TestCollectChangeDetectionReadThrough(t *testing.T) {
	slugs := []string{"aa", "bb", "cc", "dd", "ee"}
	tests := []struct {
		name          string
		failDBs       []string
		wantCalls     int64 // counter reads in the second refresh
		wantFailures  int
		wantUnchanged int
	}{
		{"FirstWorks", nil, 1, 0, 5},
		{"FirstRefuses", []string{"orchestra_aa"}, 2, 0, 5},
		{"ThreeRefuse", []string{"orchestra_aa", "orchestra_bb", "orchestra_cc"}, 3, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			act := NewActivity()
			src := NewSource()
			snap := snapshot(slugs...)
			for _, tn := range snap.Tenants {
				tn.Database.Host, tn.Database.Port = "h", 1
				act.Set("h:1", tn.Database.Name, admin.DBActivity{OID: 1, Connectable: true})
			}
			c := &admin.Collector{Source: src, Activity: act}
			rep, err := c.Collect(context.Background(), snap, nil)
			if err != nil {
				t.Fatal(err)
			}
			act.mu.Lock()
			for _, db := range tt.failDBs {
				act.failDB[db] = errors.New("database refuses connections")
			}
			act.mu.Unlock()
			act.calls.Store(0)
			rep, err = c.Collect(context.Background(), snap, rep)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				what      string
				got, want int64
			}{
				{"counter reads", act.calls.Load(), tt.wantCalls},
				{"activity failures", int64(rep.ActivityFailures), int64(tt.wantFailures)},
				{"unchanged", int64(rep.Unchanged), int64(tt.wantUnchanged)},
			} {
				if c.got != c.want {
					t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
				}
			}
		})
	}

	t.Run("AnsweredFirst", func(t *testing.T) {
		// aa failed last time: bb, which answered, is read through first.
		act := NewActivity()
		src := NewSource()
		snap := snapshot("aa", "bb")
		for _, tn := range snap.Tenants {
			tn.Database.Host, tn.Database.Port = "h", 1
			act.Set("h:1", tn.Database.Name, admin.DBActivity{OID: 1, Connectable: true})
		}
		src.Set("orchestra_aa", admin.DBStats{}, errors.New("down"), false)
		act.failDB["orchestra_aa"] = errors.New("down")
		c := &admin.Collector{Source: src, Activity: act}
		rep, err := c.Collect(context.Background(), snap, nil)
		if err != nil {
			t.Fatal(err)
		}
		act.calls.Store(0)
		if _, err := c.Collect(context.Background(), snap, rep); err != nil {
			t.Fatal(err)
		}
		if got, want := act.calls.Load(), int64(1); got != want {
			t.Errorf("counter reads = %d, want %d (through bb only)", got, want)
		}
	})
}

// TestCollectFullEverySpread: after a cold refresh, unchanged tenants are
// re-queried no earlier than half of FullEvery and no later than FullEvery
// (plus one refresh interval), and the forced re-queries spread over the
// refreshes instead of coming back together.
func TestCollectFullEverySpread(t *testing.T) {
	const (
		n        = 400
		full     = 10 * time.Minute
		interval = 30 * time.Second
	)
	act := NewActivity()
	src := NewSource()
	var slugs []string
	for i := 0; i < n; i++ {
		slugs = append(slugs, fmt.Sprintf("t%03d", i))
	}
	snap := snapshot(slugs...)
	for _, tn := range snap.Tenants {
		tn.Database.Host, tn.Database.Port = "h", 1
		act.Set("h:1", tn.Database.Name, admin.DBActivity{OID: 1, Connectable: true})
	}
	start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clock := start
	c := &admin.Collector{Source: src, Activity: act, FullEvery: full, Logger: quiet,
		Now: func() time.Time { return clock }}
	rep, err := c.Collect(context.Background(), snap, nil)
	if err != nil {
		t.Fatal(err)
	}
	lastQueried := map[string]time.Time{}
	for _, s := range slugs {
		lastQueried[s] = start
	}
	firstWave, mostLater := 0, 0
	for step := 1; step <= 240; step++ { // two hours of refreshes
		clock = start.Add(time.Duration(step) * interval)
		if rep, err = c.Collect(context.Background(), snap, rep); err != nil {
			t.Fatal(err)
		}
		for _, row := range rep.Tenants {
			age := clock.Sub(lastQueried[row.Slug])
			if row.Unchanged && age > full {
				t.Fatalf("at %s: %s unqueried for %s, want at most %s", clock.Sub(start), row.Slug, age, full)
			}
			if !row.Unchanged {
				if age < full/2 {
					t.Fatalf("at %s: %s re-queried after %s, want at least %s", clock.Sub(start), row.Slug, age, full/2)
				}
				lastQueried[row.Slug] = clock
			}
		}
		if clock.Sub(start) <= full {
			firstWave = max(firstWave, rep.Queried)
		} else if clock.Sub(start) > time.Hour {
			mostLater = max(mostLater, rep.Queried)
		}
	}
	t.Logf("most re-queried in one refresh: %d of %d in the first wave, %d in the second hour", firstWave, n, mostLater)
	if firstWave > n/6 {
		t.Errorf("first wave: one refresh re-queried %d of %d tenants, want at most %d", firstWave, n, n/6)
	}
	// Spread evenly, a refresh re-queries about n*interval/(3/4*full) = 27.
	if mostLater > n/8 {
		t.Errorf("second hour: one refresh re-queried %d of %d tenants, want at most %d", mostLater, n, n/8)
	}
}

var quiet = slog.New(slog.DiscardHandler)

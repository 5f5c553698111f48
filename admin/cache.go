package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"stagesub.dev/registry"
)

// DefaultInterval is how often a Cache refreshes in the background.
const DefaultInterval = 30 * time.Second

// CacheOptions configure a Cache.
type CacheOptions struct {
	Collector *Collector
	// Snapshot returns the current fleet snapshot; nil until there is one.
	Snapshot func() *registry.Snapshot
	// Ready, if not nil, is closed when Snapshot first has a snapshot; Run
	// waits for it before the first refresh.
	Ready <-chan struct{}
	// Interval between background refreshes (default DefaultInterval); a
	// report older than Interval is stale and Get starts a refresh.
	Interval time.Duration
	// OnReport, if not nil, is called with every published report (not
	// with a report loaded from StateFile).
	OnReport func(*Report)
	// StateFile, if not empty, keeps the report across restarts. NewCache
	// loads it (LoadState) as the current report: pages show it at once
	// (Report.Restored marks it) and the first refresh uses it as its
	// previous report, so with change detection only tenants that changed
	// or are due are queried. A missing file, or one LoadState refuses
	// (corrupt, other version), is logged and ignored: the first refresh is
	// cold. Every published report is then saved to it (SaveState) before
	// the refresh returns to its callers; a failed save is logged and
	// passed to OnStateSave, and never fails the refresh.
	StateFile string
	// OnStateSave, if not nil, is called with the result of every save to
	// StateFile (nil on success).
	OnStateSave func(error)
	Logger      *slog.Logger
	Now         func() time.Time
}

// Cache holds the latest Report and refreshes it: in the background every
// Interval while Run runs, on demand with Refresh, and when Get finds it
// stale (stale-while-revalidate: Get answers at once with what it has).
//
// Concurrent refresh requests share one fan-out. The fan-out is cancelled
// when every caller waiting for it has gone (their contexts ended), so no
// database work runs for nobody. Create a Cache with NewCache; it must not be
// copied.
type Cache struct {
	o      CacheOptions
	report atomic.Pointer[Report] // never nil

	mu       sync.Mutex
	inflight *flight         // nil when no refresh runs
	baseCtx  context.Context // set by Run: context of Get's background refreshes
	gen      uint64
}

// flight is one running refresh and the callers waiting for it.
type flight struct {
	done    chan struct{} // closed when rep/err are set
	cancel  context.CancelFunc
	waiters int
	rep     *Report
	err     error
}

// NewCache returns a Cache holding an empty report (Generation 0), or the
// report loaded from o.StateFile (see CacheOptions.StateFile); published
// generations then continue from the loaded one.
func NewCache(o CacheOptions) *Cache {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Cache{o: o}
	c.report.Store(&Report{Totals: Sum(nil)})
	if o.StateFile != "" {
		c.load()
	}
	return c
}

// load seeds the cache with the report in StateFile, if there is a usable one.
func (c *Cache) load() {
	log := c.o.Logger.With("path", c.o.StateFile)
	rep, err := LoadState(c.o.StateFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no saved stats report yet; the first refresh queries every tenant")
		return
	case err != nil:
		log.Warn("ignoring the saved stats report; the first refresh queries every tenant", "err", err)
		return
	}
	c.report.Store(rep)
	c.gen = rep.Generation
	log.Info("loaded the saved stats report", "generation", rep.Generation, "tenants", len(rep.Tenants),
		"finished_at", rep.FinishedAt, "age", c.o.Now().Sub(rep.FinishedAt).Round(time.Second))
}

// save writes rep to StateFile. Only run calls it, while its refresh is in
// flight, so saves never overlap and each is newer than the last.
func (c *Cache) save(rep *Report) {
	err := SaveState(c.o.StateFile, rep)
	if err != nil {
		c.o.Logger.Warn("saving the stats report failed; the refresh is published anyway", "path", c.o.StateFile, "err", err)
	}
	if c.o.OnStateSave != nil {
		c.o.OnStateSave(err)
	}
}

// Interval returns the background refresh interval.
func (c *Cache) Interval() time.Duration { return c.o.Interval }

// Report returns the latest published report without waiting or starting
// anything. It is never nil; before the first refresh it is Empty.
func (c *Cache) Report() *Report { return c.report.Load() }

// Get returns the latest report at once, like Report, and when it is stale
// (older than Interval, or empty) and Run is running, starts a background
// refresh unless one is in flight.
func (c *Cache) Get() *Report {
	r := c.report.Load()
	if r.Empty() || r.Age(c.o.Now()) > c.o.Interval {
		c.mu.Lock()
		base, busy := c.baseCtx, c.inflight != nil
		c.mu.Unlock()
		if base != nil && !busy {
			go func() { _, _ = c.Refresh(base) }()
		}
	}
	return r
}

// Refreshing reports whether a refresh is in flight.
func (c *Cache) Refreshing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight != nil
}

// Refresh runs a refresh, or joins the one in flight, and waits for it. It
// returns the published report, or ctx.Err() if ctx ends first. When the
// last waiter leaves, the refresh is cancelled and nothing is published.
func (c *Cache) Refresh(ctx context.Context) (*Report, error) {
	c.mu.Lock()
	f := c.inflight
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		c.inflight = f
		go c.run(fctx, f)
	}
	f.waiters++
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.rep, f.err
	case <-ctx.Done():
		c.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (c *Cache) run(ctx context.Context, f *flight) {
	defer f.cancel()
	var rep *Report
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("admin: refresh panicked: %v", p)
			}
		}()
		rep, err = c.o.Collector.Collect(ctx, c.snapshot(), c.report.Load())
	}()
	c.mu.Lock()
	if err == nil {
		c.gen++
		rep.Generation = c.gen
		c.report.Store(rep)
	}
	c.mu.Unlock()
	if err == nil && c.o.StateFile != "" {
		// Saved before the refresh counts as done: when Refresh returns,
		// the file holds this report (or the failure was logged), and no
		// other refresh runs meanwhile.
		c.save(rep)
	}
	c.mu.Lock()
	f.rep, f.err = rep, err
	c.inflight = nil
	c.mu.Unlock()
	close(f.done)
	if err != nil {
		c.o.Logger.Warn("stats refresh failed", "err", err)
		return
	}
	if c.o.OnReport != nil {
		c.o.OnReport(rep)
	}
}

func (c *Cache) snapshot() *registry.Snapshot {
	if c.o.Snapshot == nil {
		return nil
	}
	return c.o.Snapshot()
}

// Run refreshes at once (after Ready) and then every Interval, measured from
// the start of the previous refresh, until ctx ends; then it returns nil.
// While Run runs, Get may start refreshes that live until ctx ends.
func (c *Cache) Run(ctx context.Context) error {
	c.mu.Lock()
	c.baseCtx = ctx
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.baseCtx = nil
		c.mu.Unlock()
	}()
	if c.o.Ready != nil {
		select {
		case <-c.o.Ready:
		case <-ctx.Done():
			return nil
		}
	}
	for {
		began := c.o.Now()
		_, err := c.Refresh(ctx)
		wait := c.o.Interval - c.o.Now().Sub(began)
		if err != nil && wait > time.Second {
			wait = time.Second // e.g. no snapshot yet: retry soon
		}
		if wait < 0 {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

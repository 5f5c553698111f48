package consul_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry"
	"stagesub.dev/registry/consul"
	"stagesub.dev/registry/consuldev"
)

// EnvBenchConsul, when set, is the address of an empty Consul (or a
// stagesub-consul process) for the benchmarks to use instead of an in-process
// stand-in. Then the process CPU they report is the client side alone.
const EnvBenchConsul = "STAGESUB_BENCH_CONSUL"

// BenchmarkWatchInstanceChange measures, with N tenants of 2 app instances
// each in the stand-in, the time from the start of an instance registration
// to the watcher's OnSnapshot call with that instance, and the cost of that
// one change: bytes on the wire (both ways) between the watcher and Consul,
// and process CPU (watcher, registration request and, unless EnvBenchConsul
// is set, the in-process stand-in).
// Run: go test -run '^$' -bench BenchmarkWatch -benchtime 100x ./consul/
func BenchmarkWatchInstanceChange(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			f := newBenchFleet(b, n)
			ctx := context.Background()
			var lat []time.Duration
			var cpu time.Duration
			var bytes int64
			i := 0
			for b.Loop() {
				slug := f.slugs[i%n]
				id := fmt.Sprintf("bench-%d", i)
				i++
				f.want(func(s *registry.Snapshot) bool { return hasInstance(s, slug, id) })
				cpu0, bytes0, t0 := cpuTime(), f.read.Load(), time.Now()
				_, deregister, err := consul.Register(ctx, f.ops, f.reg(slug, id))
				if err != nil {
					b.Fatal(err)
				}
				f.wait()
				lat = append(lat, time.Since(t0))
				cpu += cpuTime() - cpu0
				bytes += f.read.Load() - bytes0

				f.want(func(s *registry.Snapshot) bool { return !hasInstance(s, slug, id) })
				if err := deregister(ctx); err != nil {
					b.Fatal(err)
				}
				f.wait()
			}
			f.report(lat, cpu, bytes)
		})
	}
}

// BenchmarkWatchRecordChange is BenchmarkWatchInstanceChange for a tenant
// record update (UpdateTenant: read, CAS write, read back) to the snapshot
// holding the new record.
func BenchmarkWatchRecordChange(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			f := newBenchFleet(b, n)
			store := consul.NewStore(f.ops)
			ctx := context.Background()
			var lat []time.Duration
			var cpu time.Duration
			var bytes int64
			i := 0
			for b.Loop() {
				slug := f.slugs[i%n]
				v := int64(1000 + i)
				i++
				f.want(func(s *registry.Snapshot) bool {
					t := s.Tenants[slug]
					return t != nil && t.SchemaVersion == v
				})
				cpu0, bytes0, t0 := cpuTime(), f.read.Load(), time.Now()
				if _, err := store.UpdateTenant(ctx, slug, func(t *registry.Tenant) error {
					t.SchemaVersion = v
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				f.wait()
				lat = append(lat, time.Since(t0))
				cpu += cpuTime() - cpu0
				bytes += f.read.Load() - bytes0
			}
			f.report(lat, cpu, bytes)
		})
	}
}

// benchFleet is a stand-in holding n tenants with 2 app instances each, and a
// running watcher whose client counts the bytes on its connections.
type benchFleet struct {
	b     *testing.B
	ops   *api.Client // for writes; not counted
	slugs []string
	host  string
	port  int
	read  atomic.Int64 // bytes on the wire, both directions, of the watcher's connections
	cond  atomic.Pointer[func(*registry.Snapshot) bool]
	hit   chan struct{}
	w     *consul.Watcher
}

func newBenchFleet(b *testing.B, n int) *benchFleet {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	addr := os.Getenv(EnvBenchConsul)
	if addr == "" {
		addr = consuldev.StartTest(b, consuldev.Config{HTTPAddr: "127.0.0.1:0", Logger: quiet}).Addr()
	}
	f := &benchFleet{b: b, ops: NewClient(b, addr), hit: make(chan struct{}, 1)}
	f.host, f.port = MustHealthServer(b, http.StatusOK)
	ctx := context.Background()
	store := consul.NewStore(f.ops)
	var deregs []func(context.Context) error
	b.Cleanup(func() { // leaves an external server as it was
		for _, d := range deregs {
			_ = d(ctx)
		}
		for _, slug := range f.slugs {
			_ = store.DeleteTenant(ctx, slug)
		}
	})
	for i := range n {
		slug := fmt.Sprintf("orchestra-%04d", i)
		f.slugs = append(f.slugs, slug)
		if err := store.CreateTenant(ctx, NewTenant(slug)); err != nil {
			b.Fatal(err)
		}
		for j := range 2 {
			_, d, err := consul.Register(ctx, f.ops, f.reg(slug, fmt.Sprintf("%s-%d", slug, j)))
			if err != nil {
				b.Fatal(err)
			}
			deregs = append(deregs, d)
		}
	}
	var d net.Dialer
	tr := &http.Transport{MaxIdleConnsPerHost: 8, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, n: &f.read}, nil
	}}
	b.Cleanup(tr.CloseIdleConnections)
	wc, err := api.NewClient(&api.Config{Address: addr, HttpClient: &http.Client{Transport: tr}})
	if err != nil {
		b.Fatal(err)
	}
	f.w = MustRunWatcher(b, wc, consul.WatchOptions{Logger: quiet, OnSnapshot: f.onSnapshot})
	if got, want := w0instances(f.w.Snapshot()), 2*n; got != want {
		b.Fatalf("fleet has %d instances, want %d", got, want)
	}
	return f
}

// reg is an app instance whose check runs rarely, so that health checks do
// not add load or changes during the measurement.
func (f *benchFleet) reg(slug, id string) registry.Registration {
	return registry.Registration{
		Service: registry.ServiceApp, ID: id, Tenant: slug, Address: f.host, Port: f.port,
		Version: "bench", CheckInterval: time.Hour,
	}
}

func (f *benchFleet) onSnapshot(s *registry.Snapshot) {
	if c := f.cond.Load(); c != nil && (*c)(s) {
		f.cond.Store(nil)
		f.hit <- struct{}{}
	}
}

// want arms the condition the next wait waits for.
func (f *benchFleet) want(cond func(*registry.Snapshot) bool) { f.cond.Store(&cond) }

func (f *benchFleet) wait() {
	select {
	case <-f.hit:
	case <-time.After(10 * time.Second):
		f.b.Fatal("change not seen in a snapshot within 10s")
	}
}

func (f *benchFleet) report(lat []time.Duration, cpu time.Duration, bytes int64) {
	n := len(lat)
	if n == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[min(n-1, int(p*float64(n)))].Microseconds()) / 1000 }
	f.b.ReportMetric(pct(0.50), "p50-ms")
	f.b.ReportMetric(pct(0.99), "p99-ms")
	f.b.ReportMetric(float64(lat[n-1].Microseconds())/1000, "max-ms")
	f.b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/change")
	f.b.ReportMetric(float64(bytes)/float64(n), "B/change")
}

func hasInstance(s *registry.Snapshot, slug, id string) bool {
	for _, in := range s.Instances[slug] {
		if in.ID == id {
			return true
		}
	}
	return false
}

func w0instances(s *registry.Snapshot) int {
	n := 0
	for _, is := range s.Instances {
		n += len(is)
	}
	return n
}

// cpuTime is the user plus system CPU time of the whole process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingConn counts the bytes read from and written to a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	k, err := c.Conn.Write(p)
	c.n.Add(int64(k))
	return k, err
}

package consuldev_test

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"stagesub.dev/registry/consuldev"
)

func benchServer(b *testing.B) (*consuldev.Server, *api.Client) {
	b.Helper()
	s := consuldev.StartTest(b, consuldev.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return s, s.Client(b)
}

func BenchmarkKVPut(b *testing.B) {
	_, c := benchServer(b)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := c.KV().Put(&api.KVPair{Key: fmt.Sprintf("bench/%d", i%100), Value: []byte(fmt.Sprint(i))}, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkKVGet(b *testing.B) {
	_, c := benchServer(b)
	MustPut(b, c, "bench/key", "value")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := c.KV().Get("bench/key", nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHealthService reads a service with 50 instances (passing only).
func BenchmarkHealthService(b *testing.B) {
	_, c := benchServer(b)
	for i := range 50 {
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: fmt.Sprintf("app-%d", i), Name: "stagesub-app", Tags: []string{fmt.Sprintf("tenant-t%d", i)},
			Meta:  map[string]string{"tenant": fmt.Sprintf("t%d", i)},
			Check: &api.AgentServiceCheck{TTL: "1h", Status: api.HealthPassing},
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e, _, err := c.Health().Service("stagesub-app", "", true, nil)
			if err != nil || len(e) != 50 {
				b.Errorf("got %d entries, %v", len(e), err)
				return
			}
		}
	})
}

// BenchmarkBlockingWake measures how long it takes for 200 blocking
// watchers of one key to all return after a write.
func BenchmarkBlockingWake(b *testing.B) {
	_, c := benchServer(b)
	const watchers = 200
	MustPut(b, c, "wake", "0")
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		p, _ := MustGet(b, c, "wake")
		var wg sync.WaitGroup
		wg.Add(watchers)
		started := make(chan struct{}, watchers)
		for range watchers {
			go func() {
				defer wg.Done()
				started <- struct{}{}
				if _, _, err := c.KV().Get("wake", &api.QueryOptions{WaitIndex: p.ModifyIndex, WaitTime: 30 * time.Second}); err != nil {
					b.Error(err)
				}
			}()
		}
		for range watchers {
			<-started
		}
		time.Sleep(50 * time.Millisecond) // let the requests reach the server
		b.StartTimer()
		MustPut(b, c, "wake", fmt.Sprint(i+1))
		wg.Wait()
	}
}

package syncbuf_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"stagesub.dev/internal/syncbuf"
)

func TestBufferConcurrentWrites(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				fmt.Fprintf(&b, "w%d\n", i)
				_ = b.String()
			}
		}(i)
	}
	wg.Wait()
	if got, want := strings.Count(b.String(), "\n"), 800; got != want {
		t.Errorf("lines = %d, want %d", got, want)
	}
}

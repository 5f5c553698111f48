package logbuf_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"stagesub.dev/internal/syncbuf"

	"stagesub.dev/router/logbuf"
)

// countingBuffer is a syncbuf.Buffer that also counts Write calls.
type countingBuffer struct {
	syncbuf.Buffer
	writes atomic.Int64
}

func (c *countingBuffer) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Buffer.Write(p)
}

func TestWriter(t *testing.T) {
	var out countingBuffer
	w := logbuf.New(&out, 64, time.Hour)
	for range 10 {
		if _, err := w.Write([]byte("0123456789\n")); err != nil {
			t.Fatal(err)
		}
	}
	got, writes := out.String(), out.writes.Load()
	if got != strings.Repeat("0123456789\n", 5) || writes != 1 {
		t.Errorf("after 110 bytes into 64: got %q in %d writes, want 5 whole lines in 1", got, writes)
	}
	if _, err := w.Write([]byte(strings.Repeat("x", 100) + "\n")); err != nil { // larger than the buffer
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got = out.String()
	if want := strings.Repeat("0123456789\n", 10) + strings.Repeat("x", 100) + "\n"; got != want {
		t.Errorf("after Close got %q want %q", got, want)
	}
}

func TestWriter_FlushesOnInterval(t *testing.T) {
	var out syncbuf.Buffer
	w := logbuf.New(&out, 1<<16, 20*time.Millisecond)
	defer w.Close()
	_, _ = w.Write([]byte("line\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if out.String() == "line\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("not flushed within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

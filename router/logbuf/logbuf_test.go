package logbuf_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"stagesub.dev/router/logbuf"
)

type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) get() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.writes
}

func TestWriter(t *testing.T) {
	var out syncBuffer
	w := logbuf.New(&out, 64, time.Hour)
	for range 10 {
		if _, err := w.Write([]byte("0123456789\n")); err != nil {
			t.Fatal(err)
		}
	}
	got, writes := out.get()
	if got != strings.Repeat("0123456789\n", 5) || writes != 1 {
		t.Errorf("after 110 bytes into 64: got %q in %d writes, want 5 whole lines in 1", got, writes)
	}
	if _, err := w.Write([]byte(strings.Repeat("x", 100) + "\n")); err != nil { // larger than the buffer
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ = out.get()
	if want := strings.Repeat("0123456789\n", 10) + strings.Repeat("x", 100) + "\n"; got != want {
		t.Errorf("after Close got %q want %q", got, want)
	}
}

func TestWriter_FlushesOnInterval(t *testing.T) {
	var out syncBuffer
	w := logbuf.New(&out, 1<<16, 20*time.Millisecond)
	defer w.Close()
	_, _ = w.Write([]byte("line\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := out.get(); got == "line\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("not flushed within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

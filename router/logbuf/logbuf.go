// Package logbuf buffers log output: the router's access log writes one
// JSON line per request, and one write system call per line costs more
// than the line. A Writer collects whole writes and passes them on when
// its buffer fills or every interval, like nginx's access_log buffer=.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// Writer buffers writes to an underlying writer. Each Write is kept whole
// (slog handlers write one record per call, so lines are never split). A
// Writer is safe for concurrent use; call Close to flush and stop it.
type Writer struct {
	mu   sync.Mutex
	w    io.Writer
	buf  []byte
	size int
	err  error

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a Writer that flushes to w when size bytes are buffered and
// every interval.
func New(w io.Writer, size int, interval time.Duration) *Writer {
	b := &Writer{w: w, buf: make([]byte, 0, size), size: size, stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop(interval)
	return b
}

func (b *Writer) loop(interval time.Duration) {
	defer close(b.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			_ = b.Flush()
		}
	}
}

// Write buffers p, flushing first when p does not fit. It returns the first
// error of the underlying writer, if any, from then on.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if len(b.buf)+len(p) > b.size {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > b.size {
			_, err := b.w.Write(p)
			b.err = err
			return len(p), err
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes out what is buffered.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *Writer) flushLocked() error {
	if b.err != nil || len(b.buf) == 0 {
		return b.err
	}
	_, b.err = b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return b.err
}

// Close stops the periodic flush and flushes; calling it again only
// flushes. Writes after Close are buffered until the next Flush.
func (b *Writer) Close() error {
	b.closeOnce.Do(func() { close(b.stop) })
	<-b.done
	return b.Flush()
}

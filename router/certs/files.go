package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// Files serves one certificate and key from PEM files. Reload swaps in the
// files' current contents atomically; open connections keep the
// certificate they negotiated and new handshakes get the new one, so a
// reload never drops a connection. A failed reload keeps the old pair.
type Files struct {
	certPath, keyPath string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]
	stamp             atomic.Pointer[[]byte] // contents last loaded, to detect changes
}

// NewFiles loads the pair; it fails when the files are missing or invalid.
func NewFiles(certPath, keyPath string, log *slog.Logger) (*Files, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &Files{certPath: certPath, keyPath: keyPath, log: log}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload reads the files again and reports whether the pair changed.
func (f *Files) Reload() (bool, error) {
	certPEM, err := os.ReadFile(f.certPath)
	if err != nil {
		return false, fmt.Errorf("certs: read %s: %w", f.certPath, err)
	}
	keyPEM, err := os.ReadFile(f.keyPath)
	if err != nil {
		return false, fmt.Errorf("certs: read %s: %w", f.keyPath, err)
	}
	stamp := append(append([]byte{}, certPEM...), keyPEM...)
	if old := f.stamp.Load(); old != nil && bytes.Equal(*old, stamp) {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("certs: load %s: %w", f.certPath, err)
	}
	f.cert.Store(&pair)
	f.stamp.Store(&stamp)
	return true, nil
}

// Watch reloads on every tick of interval and on every value from hup (e.g.
// SIGHUP) until ctx is done, logging changes and errors.
func (f *Files) Watch(ctx context.Context, interval time.Duration, hup <-chan os.Signal) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-hup:
		}
		changed, err := f.Reload()
		switch {
		case err != nil:
			f.log.Error("certificate reload failed; keeping the current one", "cert", f.certPath, "err", err)
		case changed:
			f.log.Info("certificate reloaded", "cert", f.certPath)
		}
	}
}

// TLSConfig returns a config serving the current pair.
func (f *Files) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return f.cert.Load(), nil },
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// HTTPHandler returns next unchanged.
func (f *Files) HTTPHandler(next http.Handler) http.Handler { return next }

package main_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
)

func writePEM(tb testing.TB, certFile, keyFile string, c *tls.Certificate) {
	tb.Helper()
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(certFile+".tmp", certPEM, 0o644); err != nil {
		tb.Fatal(err)
	}
	// Key first, then cert: a reload between the two renames sees a mismatch and keeps the old pair.
	if err := os.Rename(keyFile+".tmp", keyFile); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(certFile+".tmp", certFile); err != nil {
		tb.Fatal(err)
	}
}

package jetstream_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// selfSigned returns a server certificate for localhost and 127.0.0.1 and
// the path of its PEM file (the root to trust).
func selfSigned(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, file
}

// WithRootCAs and WithTLS combine in either order, and neither changes the
// caller's tls.Config.
func TestRootCAsAndTLSInEitherOrder(t *testing.T) {
	cert, ca := selfSigned(t)
	url, _ := startServer(t, func(o *server.Options) {
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		o.TLS = true
	})
	url = "tls://" + strings.TrimPrefix(strings.TrimPrefix(url, "nats://"), "tls://")
	for _, order := range []string{"roots first", "tls first"} {
		t.Run(order, func(t *testing.T) {
			cfg := &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12}
			opts := []jetstream.Option{jetstream.WithRootCAs(ca), jetstream.WithTLS(cfg)}
			if order == "tls first" {
				opts[0], opts[1] = opts[1], opts[0]
			}
			a, err := jetstream.New(url, opts...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := a.Connect(ctx, broker.Env{}); err != nil {
				t.Fatalf("connect: %v", err)
			}
			_ = a.Close(ctx)
			if cfg.RootCAs != nil || cfg.ServerName != "localhost" {
				t.Fatalf("the caller's tls.Config was changed: RootCAs %v", cfg.RootCAs)
			}
		})
	}
}

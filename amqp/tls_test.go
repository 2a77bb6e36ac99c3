package amqp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

// tlsServer accepts TLS connections with a certificate for the given DNS
// name or IP only, completes the handshake and closes (it speaks no AMQP).
func tlsServer(t *testing.T, dns string, ip net.IP) (addr string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if dns != "" {
		tmpl.DNSNames = []string{dns}
	}
	if ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	return ln.Addr().String(), cert
}

// TestTLSFailoverClonesConfig: each host of a failover list is verified
// against its own name (amqp091 writes the first host into the ServerName
// of the tls.Config it is given), and the caller's tls.Config is never
// changed.
func TestTLSFailoverClonesConfig(t *testing.T) {
	addr1, cert1 := tlsServer(t, "localhost", nil)
	addr2, cert2 := tlsServer(t, "", net.ParseIP("127.0.0.1"))
	_, port1, _ := net.SplitHostPort(addr1)
	_, port2, _ := net.SplitHostPort(addr2)
	roots := x509.NewCertPool()
	roots.AddCert(cert1)
	roots.AddCert(cert2)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	a, err := New("amqps://u:secret@localhost:"+port1+"/;amqps://u:secret@127.0.0.1:"+port2+"/", WithTLS(cfg))
	if err != nil {
		t.Fatal(err)
	}
	sess := newSession(a, slog.New(slog.DiscardHandler), "test")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, raw := range a.urls {
		_, err := sess.dial(ctx, raw)
		if err == nil {
			t.Fatalf("host %d: dial succeeded against a server that speaks no AMQP", i+1)
		}
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) || strings.Contains(err.Error(), "x509") || strings.Contains(err.Error(), "certificate") {
			t.Fatalf("host %d: TLS verification failed: %v", i+1, err)
		}
	}
	if cfg.ServerName != "" {
		t.Fatalf("the caller's tls.Config was changed: ServerName %q", cfg.ServerName)
	}
}

// TestTLSWithPlainURLRefused: a TLS configuration with an amqp:// URL
// (which amqp091 dials in plaintext, credentials included) is refused.
func TestTLSWithPlainURLRefused(t *testing.T) {
	for _, u := range []string{"amqp://u:secret@h:5672/", "amqps://u:secret@a:5671/;amqp://u:secret@b:5672/"} {
		_, err := New(u, WithTLS(&tls.Config{MinVersion: tls.VersionTLS12}))
		if !errors.Is(err, broker.ErrInvalidOption) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s with WithTLS: %v", u, err)
		}
	}
	if _, err := New("amqps://u:secret@h:5671/", WithTLS(&tls.Config{MinVersion: tls.VersionTLS12})); err != nil {
		t.Errorf("amqps:// with WithTLS: %v", err)
	}
}

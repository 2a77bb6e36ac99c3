package jetstream

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/kit"
	"github.com/nats-io/nats.go"
)

// Option configures an Adapter.
type Option func(*Adapter) error

// WithChannelOptions sets the adapter-wide consumer and stream options.
func WithChannelOptions(o ChannelOptions) Option {
	return func(a *Adapter) error {
		if err := o.Validate(); err != nil {
			return err
		}
		a.chopts = kit.Overlay(a.chopts, o)
		return nil
	}
}

// WithCredentials authenticates with a NATS credentials file (JWT and nkey).
func WithCredentials(file string) Option {
	return func(a *Adapter) error { return a.natsOption(nats.UserCredentials(file)) }
}

// WithNKeyFile authenticates with the nkey seed in file.
func WithNKeyFile(file string) Option {
	return func(a *Adapter) error {
		o, err := nats.NkeyOptionFromSeed(file)
		if err != nil {
			return fmt.Errorf("%w: jetstream nkey: %w", broker.ErrInvalidOption, err)
		}
		return a.natsOption(o)
	}
}

// WithTLS sets the TLS configuration (tls:// URLs require TLS). The
// adapter uses a copy: cfg is not changed, by this option or by
// WithRootCAs, before or after it.
func WithTLS(cfg *tls.Config) Option {
	return func(a *Adapter) error {
		if a.external != nil {
			return a.natsOption()
		}
		if cfg == nil {
			return fmt.Errorf("%w: jetstream TLS configuration is nil", broker.ErrInvalidOption)
		}
		a.tlsConfig = cfg.Clone()
		return nil
	}
}

// WithRootCAs trusts the PEM certificates in files for the server. It
// applies to the configuration of WithTLS whatever their order (without
// WithTLS, to a default one with TLS 1.2 at least).
func WithRootCAs(files ...string) Option {
	return func(a *Adapter) error {
		if a.external != nil {
			return a.natsOption()
		}
		pool := x509.NewCertPool()
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("%w: jetstream root CA: %w", broker.ErrInvalidOption, err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return fmt.Errorf("%w: jetstream root CA %s holds no PEM certificate", broker.ErrInvalidOption, f)
			}
		}
		a.rootCAs = pool
		return nil
	}
}

// tlsOption is the TLS of WithTLS and WithRootCAs as one nats.Option on a
// configuration of the adapter's own (nil when neither was given).
func (a *Adapter) tlsOption() nats.Option {
	if a.tlsConfig == nil && a.rootCAs == nil {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.tlsConfig != nil {
		cfg = a.tlsConfig.Clone()
	}
	if a.rootCAs != nil {
		cfg.RootCAs = a.rootCAs
	}
	return nats.Secure(cfg)
}

// WithClientCert presents the certificate and key in these PEM files (mutual TLS).
func WithClientCert(certFile, keyFile string) Option {
	return func(a *Adapter) error { return a.natsOption(nats.ClientCert(certFile, keyFile)) }
}

// WithNATSOptions passes options to nats.Connect (name, reconnect policy,
// authentication callbacks, ...). They apply after the adapter's own.
func WithNATSOptions(opts ...nats.Option) Option {
	return func(a *Adapter) error { return a.natsOption(opts...) }
}

// WithRecords sets the key-value bucket of the failure records and their
// lifetime (defaults DefaultRecordsBucket and DefaultRecordTTL).
func WithRecords(bucket string, ttl time.Duration) Option {
	return func(a *Adapter) error {
		if bucket == "" || strings.ContainsAny(bucket, ". *>") {
			return fmt.Errorf("%w: jetstream records bucket %q is not a valid bucket name", broker.ErrInvalidOption, bucket)
		}
		if ttl < 0 {
			return fmt.Errorf("%w: jetstream record TTL must be >= 0", broker.ErrInvalidOption)
		}
		a.bucket, a.recordTTL = bucket, ttl
		return nil
	}
}

// WithReplicas sets the replica count of what the adapter provisions in a
// clustered JetStream: the channels' streams and dead-letter streams whose
// StreamOptions leave Replicas unset, and the failure-record bucket when
// the adapter creates it (an existing bucket keeps its own). 0, the
// default, leaves it to the server, which makes 1 replica: a stream on one
// node, lost with it. With n replicas a send returns once its PubAck came,
// which the stream's leader sends after a majority of the n replicas stored
// the message: an accepted send survives the loss of a minority of them
// (n = 3: one node). Cost: each send waits for that quorum (a round trip
// between the nodes), and every message is stored n times. A stream with
// more replicas than the cluster has JetStream servers cannot be created:
// Subscribe returns the server's error (the count is never lowered
// silently).
func WithReplicas(n int) Option {
	return func(a *Adapter) error {
		if n < 0 {
			return fmt.Errorf("%w: jetstream replicas must be >= 0", broker.ErrInvalidOption)
		}
		a.replicas = n
		return nil
	}
}

func (a *Adapter) natsOption(opts ...nats.Option) error {
	if a.external != nil {
		return fmt.Errorf("%w: connection options need an adapter-owned connection (not NewFromClient)", broker.ErrInvalidOption)
	}
	a.natsOpts = append(a.natsOpts, opts...)
	return nil
}

// parseURLs checks a nats:// or tls:// URL or a comma-separated list of
// them, and returns the servers for nats.Connect and a display form
// without credentials.
func parseURLs(raw string) (servers []string, display string, err error) {
	var shown []string
	for _, s := range strings.Split(raw, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, perr := url.Parse(s)
		if perr != nil {
			return nil, "", fmt.Errorf("%w: jetstream URL: %w", broker.ErrInvalidOption, broker.Redacted(perr))
		}
		switch strings.ToLower(u.Scheme) {
		case "nats", "tls", "ws", "wss":
		default:
			return nil, "", fmt.Errorf("%w: jetstream URL scheme must be nats:// or tls://, got %q", broker.ErrInvalidOption, u.Scheme)
		}
		if u.Host == "" {
			return nil, "", fmt.Errorf("%w: jetstream URL has no host", broker.ErrInvalidOption)
		}
		// An unescaped "#", "/", "?" or "@" in a password cuts the URL
		// short ("nats://u:123#abc@h" parses as host "u", port 123): it
		// would dial the wrong host and show the password as a host.
		if shown := broker.DisplayURL(s); !strings.EqualFold(shown, u.Scheme+"://"+u.Host) {
			return nil, "", fmt.Errorf("%w: jetstream URL %s: the userinfo holds a character that must be percent-encoded (#, /, ? or @)",
				broker.ErrInvalidOption, shown)
		}
		servers = append(servers, s)
		shown = append(shown, u.Scheme+"://"+u.Host)
	}
	if len(servers) == 0 {
		return nil, "", fmt.Errorf("%w: jetstream URL is empty", broker.ErrInvalidOption)
	}
	return servers, strings.Join(shown, ","), nil
}

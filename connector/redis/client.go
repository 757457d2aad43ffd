package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kisflow-go/kisflow/config"
	"github.com/kisflow-go/kisflow/stream"
)

// clientOptions builds the options of the connector's client from addrs
// and params: one server (host:port or a redis://, rediss:// URL), a
// cluster when addrs lists several or params say cluster: "true", the
// sentinels of a master when params name master_name. Credentials in a URL
// are taken out of it, so no address the client logs or reports carries
// them; user and password params win over a URL's.
func clientOptions(cfg *config.Conn, p *params) (*goredis.UniversalOptions, error) {
	opts := &goredis.UniversalOptions{
		DialTimeout: p.Timeout, ReadTimeout: p.Timeout, WriteTimeout: p.Timeout,
		ClientName: p.ClientName, MasterName: p.MasterName,
		SentinelUsername: p.SentinelUser, SentinelPassword: p.SentinelPassword,
		IsClusterMode: p.Cluster, DB: p.DB,
	}
	addrs := cfg.AddrList()
	if len(addrs) == 0 {
		addrs = []string{"127.0.0.1:6379"}
	}
	for i, a := range addrs {
		if !strings.Contains(a, "://") {
			opts.Addrs = append(opts.Addrs, a)
			continue
		}
		u, err := goredis.ParseURL(a)
		if err != nil {
			return nil, fmt.Errorf("addrs entry %d (%s): %w", i+1, config.RedactURLs(a), redactURLError(err))
		}
		opts.Addrs = append(opts.Addrs, u.Addr)
		if opts.Username == "" {
			opts.Username = u.Username
		}
		if opts.Password == "" {
			opts.Password = u.Password
		}
		if u.DB != 0 && cfg.Params["db"] == "" { // a db param wins over the URL's
			opts.DB = u.DB
		}
		if u.TLSConfig != nil && opts.TLSConfig == nil {
			opts.TLSConfig = u.TLSConfig
		}
	}
	if p.User != "" {
		opts.Username = p.User
	}
	if p.Password != "" {
		opts.Password = p.Password
	}
	if p.TLS {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: strings.Split(opts.Addrs[0], ":")[0]}
	}
	cluster := opts.MasterName == "" && (len(opts.Addrs) > 1 || opts.IsClusterMode)
	if cluster && opts.DB != 0 {
		return nil, fmt.Errorf("db %d: a Redis cluster has only db 0 (addrs lists %d servers, which makes a cluster client; name master_name for sentinels)", opts.DB, len(opts.Addrs))
	}
	return opts, nil
}

// redactURLError drops the URL from a url.Parse error, which quotes it
// whole, password and all.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// classify marks err for the runtime: refused credentials or permissions,
// keys of one transaction in several cluster slots, and a key of the wrong type for a source (perRow false) are configuration
// errors that end the job (stream.Fatal); a key of the wrong type for a
// row's save is that row's failure (stream.Permanent). Everything else (a
// lost connection, a timeout, a server loading its data) is transient and
// left unmarked, to be retried.
func classify(err error, perRow bool) error {
	switch {
	case err == nil:
		return nil
	case goredis.IsAuthError(err) || goredis.IsPermissionError(err) || crossSlot(err):
		return stream.Fatal(err)
	case goredis.HasErrorPrefix(err, "WRONGTYPE"):
		if perRow {
			return stream.Permanent(err)
		}
		return stream.Fatal(err)
	}
	return err
}

// crossSlot reports whether err says that keys of one transaction or
// script lie in several slots of a cluster (from Redis, or from go-redis's
// own check before WATCH).
func crossSlot(err error) bool {
	return goredis.HasErrorPrefix(err, "CROSSSLOT") || strings.Contains(err.Error(), "keys to be in the same slot")
}

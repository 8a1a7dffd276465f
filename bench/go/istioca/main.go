// Command istioca is the benchmark anchor: Istio's own CA gRPC server (istio.io/istio security/pkg/server/ca,
// signing with security/pkg/pki/ca IstioCA) wired the way istiod wires it, on a loopback port, so that
// `npm run bench` can put the same load on it and on `citadel ca` and print the ratio. Istio is used only as a
// library (a Go module dependency); nothing here is copied from it.
//
// What matches istiod: the CSR service and signer, the authenticators (client certificate, then Kubernetes
// JWT through a TokenReview with audience istio-ca), the gRPC server options (pilot/pkg/grpc ServerOptions
// with the default keepalive and the Prometheus interceptor), TLS 1.2+ with optional client certificates, the
// kube client's QPS/burst (istiod's defaults 80/160), and a serving certificate issued by the CA itself for
// istiod's Service name. What differs: no XDS on the same port, no mesh config watch (the trust domain is a
// flag), and the CA material is read from files given on the command line.
//
// Istio's KubeJWT authenticator does not cache TokenReviews: every CreateCertificate reviews its token.
// -token-cache-ttl > 0 wraps it in a small cache of our own so that a cached-vs-cached comparison can be made
// too; the default (0) is Istio's behaviour.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshconfig "istio.io/api/mesh/v1alpha1"
	istiogrpc "istio.io/istio/pilot/pkg/grpc"
	"istio.io/istio/pkg/cluster"
	istiokeepalive "istio.io/istio/pkg/keepalive"
	kubelib "istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/pki/ca"
	"istio.io/istio/security/pkg/pki/util"
	caserver "istio.io/istio/security/pkg/server/ca"
	"istio.io/istio/security/pkg/server/ca/authenticate"
	"istio.io/istio/security/pkg/server/ca/authenticate/kubeauth"
	"k8s.io/client-go/rest"
)

type options struct {
	addr          string
	kubeconfig    string
	trustDomain   string
	caCert        string
	caKey         string
	rootCert      string
	certChain     string
	serverNames   string
	defaultTTL    time.Duration
	maxTTL        time.Duration
	tokenCacheTTL time.Duration
	qps           float64
	burst         int
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:0", "listen address for the CA gRPC server (TLS)")
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the apiserver that reviews tokens (required)")
	flag.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "trust domain of the issued SPIFFE IDs")
	flag.StringVar(&o.caCert, "ca-cert", "", "PEM signing certificate (required)")
	flag.StringVar(&o.caKey, "ca-key", "", "PEM signing key (required)")
	flag.StringVar(&o.rootCert, "root-cert", "", "PEM root bundle (default: -ca-cert, i.e. a self-signed CA)")
	flag.StringVar(&o.certChain, "cert-chain", "", "PEM chain from -ca-cert up to the root (empty for a self-signed CA)")
	flag.StringVar(&o.serverNames, "server-name", "istiod.istio-system.svc", "DNS SAN of the serving certificate")
	flag.DurationVar(&o.defaultTTL, "default-ttl", 24*time.Hour, "workload certificate TTL when the request asks for none")
	flag.DurationVar(&o.maxTTL, "max-ttl", 90*24*time.Hour, "largest workload certificate TTL a request may ask for")
	flag.DurationVar(&o.tokenCacheTTL, "token-cache-ttl", 0, "cache successful token reviews this long (0: Istio's behaviour, no cache)")
	flag.Float64Var(&o.qps, "kube-qps", 80, "kube client QPS (istiod's --kubernetesApiQPS default)")
	flag.IntVar(&o.burst, "kube-burst", 160, "kube client burst (istiod's --kubernetesApiBurst default)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "istioca: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.kubeconfig == "" || o.caCert == "" || o.caKey == "" {
		return errors.New("-kubeconfig, -ca-cert and -ca-key are required")
	}
	istioCA, err := newIstioCA(o)
	if err != nil {
		return err
	}

	restConfig, err := kubelib.DefaultRestConfig(o.kubeconfig, "", func(c *rest.Config) {
		c.QPS = float32(o.qps)
		c.Burst = o.burst
	})
	if err != nil {
		return err
	}
	kubeClient, err := kubelib.NewClient(kubelib.NewClientConfigForRestConfig(restConfig), cluster.ID("Kubernetes"))
	if err != nil {
		return err
	}
	var jwt security.Authenticator = kubeauth.NewKubeJWTAuthenticator(
		fixedMesh{&meshconfig.MeshConfig{TrustDomain: o.trustDomain}}, kubeClient.Kube(), cluster.ID("Kubernetes"), nil, nil)
	if o.tokenCacheTTL > 0 {
		jwt = &cachingAuthenticator{inner: jwt, ttl: o.tokenCacheTTL, entries: map[[32]byte]cacheEntry{}}
	}
	authenticators := []security.Authenticator{&authenticate.ClientCertAuthenticator{}, jwt}

	server, err := caserver.New(istioCA, o.maxTTL, authenticators, nil)
	if err != nil {
		return err
	}

	tlsConfig, err := servingTLS(istioCA, o)
	if err != nil {
		return err
	}
	grpcOptions := istiogrpc.ServerOptions(istiokeepalive.DefaultOption(), func(int64) {}, grpcprom.UnaryServerInterceptor)
	grpcOptions = append(grpcOptions, grpc.Creds(credentials.NewTLS(tlsConfig)))
	grpcServer := grpc.NewServer(grpcOptions...)
	server.Register(grpcServer)

	lis, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	ready, _ := json.Marshal(map[string]any{"ready": true, "addr": lis.Addr().String(), "pid": os.Getpid()})
	fmt.Println(string(ready))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		grpcServer.Stop()
	}()
	return grpcServer.Serve(lis)
}

// newIstioCA builds an IstioCA from the given files. A self-signed CA (no chain) gets the same kind of
// bundle istiod builds for its istio-ca-secret; a chain makes it a plugged-in CA.
func newIstioCA(o options) (*ca.IstioCA, error) {
	if o.certChain != "" {
		rootFile := o.rootCert
		if rootFile == "" {
			return nil, errors.New("-cert-chain needs -root-cert")
		}
		opts, err := ca.NewPluggedCertIstioCAOptions(ca.SigningCAFileBundle{
			RootCertFile: rootFile, CertChainFiles: []string{o.certChain}, SigningCertFile: o.caCert, SigningKeyFile: o.caKey,
		}, o.defaultTTL, o.maxTTL, 2048)
		if err != nil {
			return nil, err
		}
		return ca.NewIstioCA(opts)
	}
	certPem, err := os.ReadFile(o.caCert)
	if err != nil {
		return nil, err
	}
	keyPem, err := os.ReadFile(o.caKey)
	if err != nil {
		return nil, err
	}
	rootPem := certPem
	if o.rootCert != "" {
		if rootPem, err = os.ReadFile(o.rootCert); err != nil {
			return nil, err
		}
	}
	bundle, err := util.NewVerifiedKeyCertBundleFromPem(certPem, keyPem, nil, rootPem, nil)
	if err != nil {
		return nil, err
	}
	return ca.NewIstioCA(&ca.IstioCAOptions{DefaultCertTTL: o.defaultTTL, MaxCertTTL: o.maxTTL, KeyCertBundle: bundle})
}

// servingTLS issues the server's own certificate from the CA (key type follows the CA key, as istiod does)
// and accepts client certificates that chain to the CA's roots when a client offers one.
func servingTLS(istioCA *ca.IstioCA, o options) (*tls.Config, error) {
	chainPem, keyPem, err := istioCA.GenKeyCert([]string{o.serverNames}, 24*time.Hour, false)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	rootPem := istioCA.GetCAKeyCertBundle().GetRootCertPem()
	chainPem = append(append([]byte{}, chainPem...), rootPem...)
	pair, err := tls.X509KeyPair(chainPem, keyPem)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPem)
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

type fixedMesh struct{ cfg *meshconfig.MeshConfig }

func (m fixedMesh) Mesh() *meshconfig.MeshConfig { return m.cfg }

type cacheEntry struct {
	caller  *security.Caller
	expires time.Time
}

// cachingAuthenticator remembers successful authentications by token hash for ttl; failures pass through.
type cachingAuthenticator struct {
	inner   security.Authenticator
	ttl     time.Duration
	mu      sync.Mutex
	entries map[[32]byte]cacheEntry
}

func (c *cachingAuthenticator) AuthenticatorType() string { return c.inner.AuthenticatorType() }

func (c *cachingAuthenticator) Authenticate(ctx security.AuthContext) (*security.Caller, error) {
	if ctx.GrpcContext == nil {
		return c.inner.Authenticate(ctx)
	}
	token, err := security.ExtractBearerToken(ctx.GrpcContext)
	if err != nil {
		return c.inner.Authenticate(ctx)
	}
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.caller, nil
	}
	caller, err := c.inner.Authenticate(ctx)
	if err == nil && caller != nil {
		c.mu.Lock()
		c.entries[key] = cacheEntry{caller: caller, expires: now.Add(c.ttl)}
		c.mu.Unlock()
	}
	return caller, err
}

// Command loadgen drives the Istio CSR API (istio.v1.auth.IstioCertificateService/CreateCertificate) over
// gRPC+TLS with a fixed number of concurrent callers and prints one JSON object with the throughput,
// latency percentiles and errors. The same binary is pointed at every CA under test, so the client's own
// cost is identical for all of them.
//
// CSRs are generated before the clock starts (a pool per identity, reused round-robin): the CA signs a fresh
// certificate for every request anyway, and client-side key generation would otherwise cap the result.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

// identity is one caller: a bearer token and the SPIFFE ID the CA should give it.
type identity struct {
	Token    string `json:"token"`
	SpiffeID string `json:"spiffeId"`
	csrs     []string
}

type options struct {
	addr        string
	serverName  string
	rootCA      string
	identities  string
	tokenFile   string
	spiffeID    string
	concurrency int
	connections int
	duration    time.Duration
	warmup      time.Duration
	count       int
	keyType     string
	csrPool     int
	ttlSeconds  int64
	timeout     time.Duration
	label       string
	cpuPids     string
}

type latencySummary struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type result struct {
	Label        string         `json:"label,omitempty"`
	Target       string         `json:"target"`
	KeyType      string         `json:"keyType"`
	Concurrency  int            `json:"concurrency"`
	Connections  int            `json:"connections"`
	Identities   int            `json:"identities"`
	Requests     int64          `json:"requests"`
	OK           int64          `json:"ok"`
	Errors       int64          `json:"errors"`
	ErrorsByCode map[string]int `json:"errorsByCode"`
	FirstError   string         `json:"firstError,omitempty"`
	WarmupOK     int64          `json:"warmupOk"`
	DurationS    float64        `json:"durationS"`
	CertsPerSec  float64        `json:"certsPerSec"`
	LatencyMs    latencySummary `json:"latencyMs"`
	CsrPrepS     float64        `json:"csrPrepS"`
	// CPUSeconds maps each -cpu-pids process (and "loadgen" itself) to the user+system CPU seconds it used
	// during the measured phase, read from /proc/<pid>/stat right before and right after it.
	CPUSeconds map[string]float64 `json:"cpuSeconds"`
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:15012", "CA address (host:port)")
	flag.StringVar(&o.serverName, "server-name", "", "TLS server name to verify (default: host of -addr)")
	flag.StringVar(&o.rootCA, "root-ca", "", "PEM file with the roots that sign the CA's serving certificate (required)")
	flag.StringVar(&o.identities, "identities", "", `JSON file: [{"token": "...", "spiffeId": "spiffe://..."}, ...]; callers use them round-robin`)
	flag.StringVar(&o.tokenFile, "token-file", "", "a single token file (alternative to -identities; needs -spiffe-id)")
	flag.StringVar(&o.spiffeID, "spiffe-id", "", "SPIFFE ID put in the CSRs for -token-file")
	flag.IntVar(&o.concurrency, "concurrency", 1, "concurrent callers, each with one request in flight")
	flag.IntVar(&o.connections, "connections", 0, "gRPC connections shared by the callers (default min(concurrency, 16))")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration (ignored with -count)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up before the measured phase")
	flag.IntVar(&o.count, "count", 0, "measure exactly this many requests instead of a duration")
	flag.StringVar(&o.keyType, "key-type", "ecdsa-p256", "workload key type: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096")
	flag.IntVar(&o.csrPool, "csr-pool", 64, "CSRs generated before timing (spread over the identities, at least 2 each)")
	flag.Int64Var(&o.ttlSeconds, "ttl", 3600, "validity_duration sent with each request, seconds")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request deadline")
	flag.StringVar(&o.label, "label", "", "free text copied into the JSON output")
	flag.StringVar(&o.cpuPids, "cpu-pids", "", "comma-separated name=pid pairs whose CPU time over the measured phase is reported")
	bound := flag.Bool("issue-bound", false, "instead of load: measure crypto/x509 CSR parse+verify+create per CPU second on one core for -key-type over -duration, and print it as JSON")
	flag.Parse()
	if *bound {
		if err := issueBound(o.keyType, o.duration); err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.rootCA == "" {
		return errors.New("-root-ca is required")
	}
	if o.concurrency < 1 {
		return errors.New("-concurrency must be at least 1")
	}
	ids, err := loadIdentities(o)
	if err != nil {
		return err
	}
	prepStart := time.Now()
	if err := prepareCsrs(ids, o.keyType, o.csrPool); err != nil {
		return err
	}
	csrPrep := time.Since(prepStart)

	conns, err := dial(o)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	clients := make([]pb.IstioCertificateServiceClient, len(conns))
	for i, c := range conns {
		clients[i] = pb.NewIstioCertificateServiceClient(c)
	}

	// One checked call per identity before anything is timed: a CA that answers with the wrong identity or
	// a short chain must fail the run, not produce a number.
	for _, id := range ids {
		if err := checkedCall(clients[0], id, o); err != nil {
			return fmt.Errorf("first call for %s: %w", id.SpiffeID, err)
		}
	}

	res := result{
		Label: o.label, Target: o.addr, KeyType: o.keyType, Concurrency: o.concurrency,
		Connections: len(conns), Identities: len(ids), ErrorsByCode: map[string]int{}, CsrPrepS: csrPrep.Seconds(),
	}
	if o.warmup > 0 {
		w := phase(clients, ids, o, o.warmup, 0)
		res.WarmupOK = w.ok
	}
	pids, err := parsePids(o.cpuPids)
	if err != nil {
		return err
	}
	before, err := cpuTimes(pids)
	if err != nil {
		return err
	}
	m := phase(clients, ids, o, o.duration, o.count)
	after, err := cpuTimes(pids)
	if err != nil {
		return err
	}
	res.CPUSeconds = map[string]float64{}
	for name := range pids {
		res.CPUSeconds[name] = after[name] - before[name]
	}
	res.Requests = m.ok + m.errors
	res.OK = m.ok
	res.Errors = m.errors
	res.ErrorsByCode = m.byCode
	res.FirstError = m.firstError
	res.DurationS = m.elapsed.Seconds()
	if res.DurationS > 0 {
		res.CertsPerSec = float64(m.ok) / res.DurationS
	}
	res.LatencyMs = summarise(m.latencies)
	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

func loadIdentities(o options) ([]*identity, error) {
	var ids []*identity
	switch {
	case o.identities != "":
		raw, err := os.ReadFile(o.identities)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &ids); err != nil {
			return nil, fmt.Errorf("%s: %w", o.identities, err)
		}
	case o.tokenFile != "":
		raw, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return nil, err
		}
		if o.spiffeID == "" {
			return nil, errors.New("-token-file needs -spiffe-id")
		}
		ids = []*identity{{Token: strings.TrimSpace(string(raw)), SpiffeID: o.spiffeID}}
	default:
		return nil, errors.New("give -identities or -token-file")
	}
	if len(ids) == 0 {
		return nil, errors.New("no identities")
	}
	for _, id := range ids {
		if _, err := url.Parse(id.SpiffeID); err != nil || !strings.HasPrefix(id.SpiffeID, "spiffe://") {
			return nil, fmt.Errorf("bad spiffeId %q", id.SpiffeID)
		}
	}
	return ids, nil
}

// prepareCsrs fills each identity's pool; CSRs for the same SPIFFE ID are shared between identities.
func prepareCsrs(ids []*identity, keyType string, pool int) error {
	perID := pool / len(ids)
	if perID < 2 {
		perID = 2
	}
	bySpiffe := map[string][]string{}
	for _, id := range ids {
		if existing, ok := bySpiffe[id.SpiffeID]; ok && len(existing) >= perID {
			id.csrs = existing
			continue
		}
		csrs := bySpiffe[id.SpiffeID]
		for len(csrs) < perID {
			c, err := makeCsr(keyType, id.SpiffeID)
			if err != nil {
				return err
			}
			csrs = append(csrs, c)
		}
		bySpiffe[id.SpiffeID] = csrs
		id.csrs = csrs
	}
	return nil
}

func newKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "ecdsa-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa-2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, fmt.Errorf("unknown -key-type %q", keyType)
	}
}

func makeCsr(keyType, spiffeID string) (string, error) {
	key, err := newKey(keyType)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(spiffeID)
	if err != nil {
		return "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func dial(o options) ([]*grpc.ClientConn, error) {
	rootPem, err := os.ReadFile(o.rootCA)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPem) {
		return nil, fmt.Errorf("%s: no PEM certificates", o.rootCA)
	}
	serverName := o.serverName
	if serverName == "" {
		serverName = strings.Split(o.addr, ":")[0]
	}
	n := o.connections
	if n <= 0 {
		n = min(o.concurrency, 16)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12})
	conns := make([]*grpc.ClientConn, 0, n)
	for i := 0; i < n; i++ {
		c, err := grpc.NewClient(o.addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func call(ctx context.Context, client pb.IstioCertificateServiceClient, id *identity, csr string, ttl int64) (*pb.IstioCertificateResponse, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+id.Token)
	return client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr, ValidityDuration: ttl})
}

func checkedCall(client pb.IstioCertificateServiceClient, id *identity, o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	resp, err := call(ctx, client, id, id.csrs[0], o.ttlSeconds)
	if err != nil {
		return err
	}
	if len(resp.CertChain) < 2 {
		return fmt.Errorf("cert_chain has %d elements, want at least 2", len(resp.CertChain))
	}
	block, _ := pem.Decode([]byte(resp.CertChain[0]))
	if block == nil {
		return errors.New("cert_chain[0] is not PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.SpiffeID {
		return fmt.Errorf("leaf URI SANs %v, want [%s]", leaf.URIs, id.SpiffeID)
	}
	return nil
}

type phaseResult struct {
	ok, errors int64
	byCode     map[string]int
	firstError string
	latencies  []time.Duration
	elapsed    time.Duration
}

// phase runs the callers until the duration passes or, with count > 0, until count requests have been sent.
func phase(clients []pb.IstioCertificateServiceClient, ids []*identity, o options, duration time.Duration, count int) phaseResult {
	var issued atomic.Int64
	var okCount, errCount atomic.Int64
	deadline := time.Now().Add(duration)
	var mu sync.Mutex
	byCode := map[string]int{}
	firstError := ""
	perWorker := make([][]time.Duration, o.concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := clients[w%len(clients)]
			lat := make([]time.Duration, 0, 1024)
			for i := 0; ; i++ {
				if count > 0 {
					if issued.Add(1) > int64(count) {
						break
					}
				} else if !time.Now().Before(deadline) {
					break
				}
				id := ids[(w+i*o.concurrency)%len(ids)]
				csr := id.csrs[(w+i)%len(id.csrs)]
				ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
				t0 := time.Now()
				_, err := call(ctx, client, id, csr, o.ttlSeconds)
				d := time.Since(t0)
				cancel()
				if err != nil {
					errCount.Add(1)
					mu.Lock()
					byCode[status.Code(err).String()]++
					if firstError == "" {
						firstError = err.Error()
					}
					mu.Unlock()
					continue
				}
				okCount.Add(1)
				lat = append(lat, d)
			}
			perWorker[w] = lat
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range perWorker {
		all = append(all, l...)
	}
	return phaseResult{ok: okCount.Load(), errors: errCount.Load(), byCode: byCode, firstError: firstError, latencies: all, elapsed: elapsed}
}

func summarise(lat []time.Duration) latencySummary {
	if len(lat) == 0 {
		return latencySummary{}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pick := func(q float64) float64 {
		i := int(q*float64(len(lat))+0.5) - 1
		i = max(0, min(i, len(lat)-1))
		return ms(lat[i])
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return latencySummary{P50: pick(0.50), P90: pick(0.90), P99: pick(0.99), Max: ms(lat[len(lat)-1]), Mean: ms(sum / time.Duration(len(lat)))}
}

// parsePids reads "name=pid,name=pid"; "loadgen" (this process) is always included.
func parsePids(spec string) (map[string]int, error) {
	pids := map[string]int{"loadgen": os.Getpid()}
	for _, part := range strings.Split(spec, ",") {
		if part == "" {
			continue
		}
		name, pidText, ok := strings.Cut(part, "=")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 {
			return nil, fmt.Errorf("-cpu-pids: bad entry %q (want name=pid)", part)
		}
		pids[name] = pid
	}
	return pids, nil
}

// cpuTimes reads utime+stime (fields 14 and 15 of /proc/<pid>/stat, in clock ticks of 1/100 s) per process.
func cpuTimes(pids map[string]int) (map[string]float64, error) {
	out := map[string]float64{}
	for name, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, fmt.Errorf("cpu of %s: %w", name, err)
		}
		text := string(raw)
		fields := strings.Fields(text[strings.LastIndexByte(text, ')')+1:])
		if len(fields) < 13 {
			return nil, fmt.Errorf("cpu of %s: short /proc stat", name)
		}
		utime, err1 := strconv.ParseFloat(fields[11], 64)
		stime, err2 := strconv.ParseFloat(fields[12], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("cpu of %s: unreadable /proc stat", name)
		}
		out[name] = (utime + stime) / 100
	}
	return out, nil
}

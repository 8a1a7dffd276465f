package main

// The issuance bound of Go's standard library, the runtime Istio's CA is written in: per certificate, decode a
// PEM CSR, parse it, check its signature, and create a leaf with crypto/x509 (which also verifies the signature
// it made), on one core. Printed beside citadel's own figures so the README can say where a Go CA saves time.

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"runtime"
	"syscall"
	"time"
)

type issueBoundResult struct {
	KeyType string `json:"keyType"`
	// Certificates per CPU second of this process with GOMAXPROCS=1.
	PerCPUSec float64 `json:"perCpuSec"`
	// The two halves, microseconds of CPU each.
	ParseVerifyUs float64 `json:"parseVerifyUs"`
	CreateUs      float64 `json:"createUs"`
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perCPU runs fn for about d after a short warm-up and returns CPU time per call.
func perCPU(d time.Duration, fn func() error) (time.Duration, error) {
	for i := 0; i < 20; i++ {
		if err := fn(); err != nil {
			return 0, err
		}
	}
	n := 0
	start, cpu := time.Now(), cpuNow()
	for time.Since(start) < d {
		if err := fn(); err != nil {
			return 0, err
		}
		n++
	}
	return (cpuNow() - cpu) / time.Duration(n), nil
}

func issueBound(keyType string, d time.Duration) error {
	runtime.GOMAXPROCS(1)
	caKey, err := newKey(keyType)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"bench"}},
		NotBefore: now, NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDer, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDer)
	if err != nil {
		return err
	}
	csrs := make([]string, 32)
	for i := range csrs {
		if csrs[i], err = makeCsr(keyType, "spiffe://cluster.local/ns/bench/sa/bound"); err != nil {
			return err
		}
	}
	i := 0
	parse := func() (*x509.CertificateRequest, error) {
		i++
		block, _ := pem.Decode([]byte(csrs[i%len(csrs)]))
		if block == nil {
			return nil, errors.New("bad PEM")
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			return nil, err
		}
		return csr, csr.CheckSignature()
	}
	create := func(csr *x509.CertificateRequest) error {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return err
		}
		t := time.Now()
		leaf := &x509.Certificate{
			SerialNumber: serial, NotBefore: t.Add(-2 * time.Minute), NotAfter: t.Add(24 * time.Hour), URIs: csr.URIs,
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		_, err = x509.CreateCertificate(rand.Reader, leaf, caCert, csr.PublicKey, caKey)
		return err
	}
	parsed, err := parse()
	if err != nil {
		return err
	}
	pv, err := perCPU(d/3, func() error { _, err := parse(); return err })
	if err != nil {
		return err
	}
	cr, err := perCPU(d/3, func() error { return create(parsed) })
	if err != nil {
		return err
	}
	both, err := perCPU(d/3, func() error {
		csr, err := parse()
		if err != nil {
			return err
		}
		return create(csr)
	})
	if err != nil {
		return err
	}
	out, err := json.Marshal(issueBoundResult{KeyType: keyType, PerCPUSec: float64(time.Second) / float64(both), ParseVerifyUs: float64(pv) / 1e3, CreateUs: float64(cr) / 1e3})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(os.Stdout, string(out))
	return err
}

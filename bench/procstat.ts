/**
 * CPU time and memory of a running process from /proc (Linux only): the benchmark's CPU-seconds-per-1,000-
 * certificates figure is the difference of two samples taken around a measured phase.
 */
import fs from 'node:fs';

/** Clock ticks per second for utime/stime in /proc/<pid>/stat; 100 on every Linux the project runs on. */
const CLK_TCK = 100;

export interface CpuSample {
  /** User + system CPU seconds the process has used so far (its own threads, not its children). */
  readonly cpuSeconds: number;
  /** Resident set size in bytes. */
  readonly rssBytes: number;
}

/** Reads /proc/<pid>/stat. Throws if the process does not exist. */
export function sampleProcess(pid: number): CpuSample {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime 15, rss (pages) 24.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const rssPages = Number(fields[21]);
  return { cpuSeconds: (utime + stime) / CLK_TCK, rssBytes: rssPages * 4096 };
}

/** Peak resident set size (VmHWM) in bytes, or undefined when /proc does not say. */
export function peakRss(pid: number): number | undefined {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+) kB/m.exec(status);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** Number of open file descriptors (entries of /proc/<pid>/fd). Throws if the process does not exist. */
export function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

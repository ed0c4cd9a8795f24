//! Runs a target: its corpus, then generated cases until the deadline, each on a
//! thread of its own, watched for panics, broken invariants and hangs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a target runs when `SPANGATE_FUZZ_SECONDS` is not set: a plain
/// `cargo test` stays quick and still tries some thousands of cases.
const DEFAULT_SECONDS: f64 = 3.0;
/// A case's stack: a Tokio worker's, where spangate decodes and evaluates.
const CASE_STACK_BYTES: usize = 2 * 1024 * 1024;
/// A case still running after this long has its input saved at once, in case it
/// then exhausts memory or the stack before it is reported...
const SLOW: Duration = Duration::from_secs(2);
/// ...and after this long it is a hang: cases take milliseconds.
const HANG: Duration = Duration::from_secs(20);
/// The most heap the test process may hold: a case that runs away aborts here
/// instead of taking the machine's memory.
const HEAP_CAP_BYTES: usize = 4 << 30;

/// What a target checks an input for: `Err` names the broken invariant.
pub type Outcome = Result<(), String>;

/// A target's check, shared with the thread each case runs on.
type Check = dyn Fn(&[u8]) -> Outcome + Send + Sync;

/// A fuzz target: its name (and corpus folder) and extra seeds.
pub struct Target {
    pub name: &'static str,
    /// Corpus files hold hex text (`#` starts a comment) rather than the bytes.
    pub hex: bool,
    /// Seeds made in code, run after the corpus files.
    pub seeds: Vec<Vec<u8>>,
}

impl Target {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            hex: false,
            seeds: Vec::new(),
        }
    }
}

/// Which case an input is, for messages and replay.
#[derive(Debug, Clone)]
enum Origin {
    Corpus(String),
    Seed(usize),
    Generated(u64),
    Replayed(PathBuf),
}

/// Runs `target`: its corpus and seeds, then cases from `generate` until the
/// deadline, each checked by `check`.
pub fn run(
    target: Target,
    generate: impl Fn(&mut Rng, &[Vec<u8>]) -> Vec<u8>,
    check: impl Fn(&[u8]) -> Outcome + Send + Sync + 'static,
) {
    let check: Arc<Check> = Arc::new(check);
    let name = target.name;
    let files = corpus(name);
    let pool: Vec<Vec<u8>> = files
        .iter()
        .map(|(_, bytes)| bytes.clone())
        .chain(target.seeds.iter().cloned())
        .collect();
    let seed = env_u64("SPANGATE_FUZZ_SEED").unwrap_or_else(rand::random);
    let runner = Runner {
        name,
        hex: target.hex,
        seed,
        check,
    };

    if let Ok(path) = std::env::var("SPANGATE_FUZZ_INPUT") {
        let path = PathBuf::from(path);
        let input = read_input(&path);
        runner.case(Origin::Replayed(path.clone()), input);
        eprintln!("fuzz {name}: {} passes", path.display());
        return;
    }
    if let Some(case) = env_u64("SPANGATE_FUZZ_CASE") {
        let input = generate(&mut Rng::for_case(seed, case), &pool);
        // Saved first: a stack overflow aborts the process before any report.
        let path = runner.save(&Origin::Generated(case), &input);
        eprintln!(
            "fuzz {name}: case {case} of seed {seed:#x} is saved in {}",
            path.display()
        );
        runner.case(Origin::Generated(case), input);
        eprintln!("fuzz {name}: case {case} of seed {seed:#x} passes");
        return;
    }

    let seconds = std::env::var("SPANGATE_FUZZ_SECONDS")
        .ok()
        .map(|s| {
            s.parse::<f64>()
                .unwrap_or_else(|_| panic!("SPANGATE_FUZZ_SECONDS={s:?} is not a number"))
        })
        .unwrap_or(DEFAULT_SECONDS);
    eprintln!(
        "fuzz {name}: seed {seed:#x} (SPANGATE_FUZZ_SEED={seed:#x} replays this run), \
         {} corpus files and {} seeds, then {seconds} s of generated cases",
        files.len(),
        target.seeds.len()
    );
    let started = Instant::now();
    for (file, input) in files {
        runner.case(Origin::Corpus(file), input);
    }
    for (index, input) in target.seeds.into_iter().enumerate() {
        runner.case(Origin::Seed(index), input);
    }
    let generating = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut cases = 0u64;
    // The deadline bounds the work; nothing is asserted about speed.
    while Instant::now() < deadline {
        let input = generate(&mut Rng::for_case(seed, cases), &pool);
        runner.case(Origin::Generated(cases), input);
        cases += 1;
    }
    let elapsed = generating.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {cases} generated cases in {elapsed:.1} s ({:.0} a second), all pass",
        cases as f64 / elapsed.max(1e-9)
    );
}

struct Runner {
    name: &'static str,
    hex: bool,
    seed: u64,
    check: Arc<Check>,
}

impl Runner {
    /// Runs one case on a thread named after it, so that even a stack overflow,
    /// which aborts the process, names the case it happened in.
    fn case(&self, origin: Origin, input: Vec<u8>) {
        let input = Arc::new(input);
        let (done, outcome) = mpsc::channel();
        let thread = {
            let input = Arc::clone(&input);
            let check = Arc::clone(&self.check);
            thread::Builder::new()
                .name(self.label(&origin))
                .stack_size(CASE_STACK_BYTES)
                .spawn(move || {
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
                    // The receiver is gone only when the case was already reported.
                    let _ = done.send(result);
                })
                .expect("a thread for the case")
        };
        let started = Instant::now();
        let mut saved = None;
        let result = loop {
            match outcome.recv_timeout(SLOW) {
                Ok(result) => break result,
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < HANG => {
                    if saved.is_none() {
                        let path = self.save(&origin, &input);
                        eprintln!(
                            "fuzz {}: {} has run {:.0?} so far; its input is saved in {}",
                            self.name,
                            self.label(&origin),
                            started.elapsed(),
                            path.display()
                        );
                        saved = Some(path);
                    }
                }
                Err(_) => self.fail(
                    &origin,
                    &input,
                    &format!("is still running after {HANG:?}: a hang"),
                ),
            }
        };
        thread
            .join()
            .expect("the case's thread ends once it answered");
        match result {
            Ok(Ok(())) => {}
            Ok(Err(broken)) => {
                self.fail(&origin, &input, &format!("breaks an invariant: {broken}"))
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(a panic without a message)");
                self.fail(&origin, &input, &format!("panics: {message}"))
            }
        }
    }

    fn label(&self, origin: &Origin) -> String {
        match origin {
            Origin::Corpus(file) => format!("{} corpus file {file}", self.name),
            Origin::Seed(index) => format!("{} seed {index}", self.name),
            Origin::Generated(case) => {
                format!("{} seed {:#x} case {case}", self.name, self.seed)
            }
            Origin::Replayed(path) => format!("{} input {}", self.name, path.display()),
        }
    }

    /// Writes `input` where failures are kept, in the corpus's format.
    fn save(&self, origin: &Origin, input: &[u8]) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
        std::fs::create_dir_all(&dir).expect("the failures folder");
        let id = match origin {
            Origin::Corpus(file) => format!("corpus-{}", file.split('.').next().unwrap_or(file)),
            Origin::Seed(index) => format!("seed-{index}"),
            Origin::Generated(case) => format!("{:016x}-{case}", self.seed),
            Origin::Replayed(_) => "replayed".to_string(),
        };
        let (extension, bytes) = if self.hex {
            ("hex", to_hex(input).into_bytes())
        } else {
            ("input", input.to_vec())
        };
        let path = dir.join(format!("{}-{id}.{extension}", self.name));
        std::fs::write(&path, bytes).expect("the failing input written");
        path
    }

    fn fail(&self, origin: &Origin, input: &[u8], what: &str) -> ! {
        let path = self.save(origin, input);
        let name = self.name;
        let mut message = format!(
            "fuzz {name}: {} {what}\n\
             the input ({} bytes) is saved in {}\n\
             replay it: SPANGATE_FUZZ_INPUT={} cargo test --test fuzz {name}",
            self.label(origin),
            input.len(),
            path.display(),
            path.display()
        );
        if let Origin::Generated(case) = origin {
            message.push_str(&format!(
                "\nor make it again: SPANGATE_FUZZ_SEED={:#x} SPANGATE_FUZZ_CASE={case} \
                 cargo test --test fuzz {name}",
                self.seed
            ));
        }
        panic!("{message}");
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

/// The corpus files of `name`, by file name.
fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(name);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .map(|path| {
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a corpus file name")
                .to_string();
            (file, read_input(&path))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed", dir.display());
    files
}

/// A saved input: hex text when its name ends in `.hex`, else the bytes.
fn read_input(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "hex") {
        from_hex(&String::from_utf8_lossy(&bytes))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    } else {
        bytes
    }
}

/// Bytes as hex, 32 to a line.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|line| hex::encode(line) + "\n")
        .collect()
}

/// Hex text, white space ignored, `#` to the end of a line a comment.
fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(&digits).map_err(|e| format!("not hex: {e}"))
}

/// The simulator's SplitMix64: small, fast, and the same sequence on every platform and version,
/// which replaying a seed needs.
#[derive(Debug, Clone)]
pub struct Rng(spangate::simulate::Random);

impl Rng {
    /// The generator of case `case` of the run seeded `seed`.
    pub fn for_case(seed: u64, case: u64) -> Self {
        let mut rng = Rng(spangate::simulate::Random::new(
            seed ^ case.wrapping_mul(0xA24B_AED4_963E_E407),
        ));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length: mostly small, sometimes large, rarely huge (up to `max`).
    pub fn length(&mut self, max: usize) -> usize {
        let bound = match self.below(16) {
            0 => max,
            1..=3 => max.min(256),
            _ => max.min(8),
        };
        self.below(bound + 1)
    }
}

/// The first run of more than `longest` characters of `message` that `input`
/// holds too, if any: what a message repeats of an input it should not quote.
pub fn echoed(message: &str, input: &str, longest: usize) -> Option<String> {
    let starts: Vec<usize> = message.char_indices().map(|(i, _)| i).collect();
    (0..starts.len()).find_map(|first| {
        let end = starts
            .get(first + longest + 1)
            .copied()
            .or_else(|| (first + longest + 1 == starts.len()).then_some(message.len()))?;
        let run = &message[starts[first]..end];
        input.contains(run).then(|| run.to_string())
    })
}

/// The system allocator, with the heap capped at [`HEAP_CAP_BYTES`] and what
/// each thread holds counted, so a target can measure what a call keeps.
pub struct Capped;

static HELD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Bytes this thread allocated and has not freed, and the most since reset.
    static THREAD_HELD: Cell<isize> = const { Cell::new(0) };
    static THREAD_PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(change: isize) {
    // `try_with`: a thread being torn down no longer has its counters.
    let _ = THREAD_HELD.try_with(|held| {
        let now = held.get() + change;
        held.set(now);
        let _ = THREAD_PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

/// Heap this thread holds, counted from its start.
pub fn thread_held() -> isize {
    THREAD_HELD.with(Cell::get)
}

/// The most this thread has held since the last call, which starts a new count.
pub fn thread_peak_since_last() -> isize {
    THREAD_PEAK.with(|peak| peak.replace(thread_held()))
}

// SAFETY: every call goes to the system allocator unchanged, or fails (null)
// when the cap would be passed; counting touches an atomic and const-initialised
// thread-locals, which allocate nothing.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size() > HEAP_CAP_BYTES {
            HELD.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        count(layout.size() as isize);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` or `realloc` here, that is from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (layout.size(), new_size);
        if new > old && HELD.fetch_add(new - old, Ordering::Relaxed) + (new - old) > HEAP_CAP_BYTES
        {
            HELD.fetch_sub(new - old, Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc` and `dealloc`.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if moved.is_null() {
            if new > old {
                HELD.fetch_sub(new - old, Ordering::Relaxed);
            }
            return moved;
        }
        if new < old {
            HELD.fetch_sub(old - new, Ordering::Relaxed);
        }
        count(new as isize - old as isize);
        moved
    }
}

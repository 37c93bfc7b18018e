/* runner.cpp — modelfleet-runner-opencv, the reference runner of
 * docs/runner-protocol.md: an ONNX model through OpenCV DNN over the rows of a
 * little-endian float32 .npy. Rows are read one at a time (memory: the net plus
 * one row), each fed as a batch of one; stdout carries the protocol lines and
 * nothing else (library chatter on fd 1 is sent to stderr). Exit 0 after
 * `end`, 1 on bad input or a runtime error, 2 on a malformed command line. */
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

namespace
{

const char *const prog = "modelfleet-runner-opencv";
const char *const runtime_name = "opencv-dnn";
const unsigned long long max_warmup = 1000000000ULL;
const unsigned long long max_threads = 1024;
const size_t max_npy_header = 65536;
const size_t max_dims = 32; /* cv::Mat's limit (CV_MAX_DIM) */

/* A refusal or a runtime failure: the message goes to stderr, exit 1. */
struct Failure : std::runtime_error {
    explicit Failure(const std::string &what) : std::runtime_error(what)
    {
    }
};

struct Options {
    std::string model;
    std::string inputs;
    unsigned long long warmup = 0;
    int threads = 0; /* 0: OpenCV picks */
};

void usage(FILE *to)
{
    std::fprintf(to, "usage: %s --model MODEL_FILE --inputs INPUTS_NPY --warmup W [--threads T]\n",
                 prog);
}

[[noreturn]] void usage_error(const std::string &what)
{
    std::fprintf(stderr, "%s: %s\n", prog, what.c_str());
    usage(stderr);
    std::exit(2);
}

/* A decimal integer in [min, max]: digits only, no sign, no blanks. */
bool parse_uint(const char *s, unsigned long long min, unsigned long long max,
                unsigned long long *out)
{
    unsigned long long v = 0;
    if (*s == '\0')
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v < min)
        return false;
    *out = v;
    return true;
}

Options parse_args(int argc, char **argv)
{
    Options o;
    bool have_model = false, have_inputs = false, have_warmup = false, have_threads = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            usage(stdout);
            std::exit(0);
        }
        bool *seen;
        if (a == "--model")
            seen = &have_model;
        else if (a == "--inputs")
            seen = &have_inputs;
        else if (a == "--warmup")
            seen = &have_warmup;
        else if (a == "--threads")
            seen = &have_threads;
        else
            usage_error("unknown option '" + a + "'");
        if (*seen)
            usage_error(a + " given twice");
        if (i + 1 >= argc)
            usage_error(a + " needs a value");
        const char *v = argv[++i];
        *seen = true;
        unsigned long long n = 0;
        if (a == "--model") {
            if (*v == '\0')
                usage_error("--model is empty");
            o.model = v;
        } else if (a == "--inputs") {
            if (*v == '\0')
                usage_error("--inputs is empty");
            o.inputs = v;
        } else if (a == "--warmup") {
            if (!parse_uint(v, 0, max_warmup, &n))
                usage_error(std::string("--warmup wants an integer in 0..") +
                            std::to_string(max_warmup) + ", not '" + v + "'");
            o.warmup = n;
        } else {
            if (!parse_uint(v, 1, max_threads, &n))
                usage_error(std::string("--threads wants an integer in 1..") +
                            std::to_string(max_threads) + ", not '" + v + "'");
            o.threads = (int)n;
        }
    }
    if (!have_model || !have_inputs || !have_warmup)
        usage_error("--model, --inputs and --warmup are required");
    return o;
}

std::string errno_text(int e)
{
    return std::strerror(e);
}

/* Reads exactly len bytes at off; false on end of file. */
bool read_at(int fd, void *buf, size_t len, uint64_t off, const std::string &path)
{
    char *p = static_cast<char *>(buf);
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw Failure(path + ": cannot read: " + errno_text(errno));
        if (n == 0)
            return false;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return true;
}

/* The evaluation inputs: a .npy (format 1.0 or 2.0) of '<f4', C order, shape
 * (n, d1, ...) with every dimension >= 1, whose size matches its header. */
class Inputs
{
  public:
    explicit Inputs(const std::string &path) : path_(path)
    {
        fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_ < 0)
            throw Failure(path + ": cannot open: " + errno_text(errno));
        try {
            parse();
        } catch (...) {
            close(fd_);
            throw;
        }
    }
    ~Inputs()
    {
        close(fd_);
    }
    Inputs(const Inputs &) = delete;
    Inputs &operator=(const Inputs &) = delete;

    uint64_t count() const
    {
        return n_;
    }
    /* (1, d1, d2, ...): the shape of one sample fed as a batch of one. */
    const std::vector<int> &sample_shape() const
    {
        return sample_shape_;
    }
    /* Copies row i into dst (row_floats() floats). */
    void read_row(uint64_t i, float *dst) const
    {
        if (!read_at(fd_, dst, row_bytes_, data_offset_ + i * row_bytes_, path_))
            throw Failure(path_ + ": file shrank while being read");
    }

  private:
    [[noreturn]] void bad(const std::string &what) const
    {
        throw Failure(path_ + ": " + what);
    }

    void parse()
    {
        unsigned char pre[12];
        struct stat st;
        if (fstat(fd_, &st) != 0)
            bad("cannot stat: " + errno_text(errno));
        if (!S_ISREG(st.st_mode))
            bad("not a regular file");
        if (!read_at(fd_, pre, 10, 0, path_) || std::memcmp(pre, "\x93NUMPY", 6) != 0)
            bad("not a .npy file (bad magic)");
        size_t hlen, prelen;
        if (pre[6] == 1 && pre[7] == 0) {
            hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
            prelen = 10;
        } else if (pre[6] == 2 && pre[7] == 0) {
            if (!read_at(fd_, pre + 10, 2, 10, path_))
                bad(".npy header is truncated");
            hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 |
                   (size_t)pre[11] << 24;
            prelen = 12;
        } else {
            bad(".npy format version " + std::to_string(pre[6]) + "." + std::to_string(pre[7]) +
                " is not supported (1.0 or 2.0)");
        }
        if (hlen > max_npy_header)
            bad(".npy header is too long");
        std::string head(hlen, '\0');
        if (!read_at(fd_, &head[0], hlen, prelen, path_))
            bad(".npy header is truncated");
        parse_dict(head);
        data_offset_ = prelen + hlen;

        uint64_t expect = data_offset_;
        if (n_ > (UINT64_MAX - expect) / row_bytes_)
            bad(".npy shape overflows");
        expect += n_ * row_bytes_;
        if ((uint64_t)st.st_size != expect)
            bad("file is " + std::to_string((long long)st.st_size) +
                " bytes but its header announces " + std::to_string(expect));
    }

    /* {'descr': '<f4', 'fortran_order': False, 'shape': (n, d1, ...), }
     * in any key order, each key once, nothing else. */
    void parse_dict(const std::string &h)
    {
        size_t p = 0;
        bool seen_descr = false, seen_order = false, seen_shape = false;
        std::string descr;
        bool fortran = false;
        std::vector<uint64_t> shape;
        auto ws = [&] {
            while (p < h.size() && (h[p] == ' ' || h[p] == '\t' || h[p] == '\n' || h[p] == '\r'))
                p++;
        };
        auto lit = [&](const char *s) {
            ws();
            size_t len = std::strlen(s);
            if (h.compare(p, len, s) != 0)
                return false;
            p += len;
            return true;
        };
        auto at = [&](char c) { /* the next non-blank is c (not consumed) */
                                ws();
                                return p < h.size() && h[p] == c;
        };
        auto str = [&](std::string &out) {
            ws();
            if (p >= h.size() || (h[p] != '\'' && h[p] != '"'))
                return false;
            char q = h[p++];
            size_t end = h.find(q, p);
            if (end == std::string::npos)
                return false;
            out = h.substr(p, end - p);
            p = end + 1;
            return true;
        };
        auto tuple = [&](std::vector<uint64_t> &out) {
            if (!lit("("))
                return false;
            for (;;) {
                if (lit(")"))
                    return true;
                ws();
                if (p >= h.size() || h[p] < '0' || h[p] > '9')
                    return false;
                uint64_t v = 0;
                while (p < h.size() && h[p] >= '0' && h[p] <= '9') {
                    unsigned d = (unsigned)(h[p++] - '0');
                    if (v > (UINT64_MAX - d) / 10)
                        return false;
                    v = v * 10 + d;
                }
                out.push_back(v);
                if (!lit(",") && !at(')'))
                    return false;
            }
        };
        if (!lit("{"))
            bad("malformed .npy header");
        for (;;) {
            if (lit("}"))
                break;
            std::string key;
            if (!str(key) || !lit(":"))
                bad("malformed .npy header");
            if (key == "descr" && !seen_descr) {
                if (!str(descr))
                    bad("malformed .npy header (descr)");
                seen_descr = true;
            } else if (key == "fortran_order" && !seen_order) {
                if (lit("True"))
                    fortran = true;
                else if (!lit("False"))
                    bad("malformed .npy header (fortran_order)");
                seen_order = true;
            } else if (key == "shape" && !seen_shape) {
                if (!tuple(shape))
                    bad("malformed .npy header (shape)");
                seen_shape = true;
            } else {
                bad("malformed .npy header (key '" + key + "')");
            }
            if (!lit(",") && !at('}'))
                bad("malformed .npy header");
        }
        ws();
        if (p != h.size())
            bad("malformed .npy header (text after the dict)");
        if (!seen_descr || !seen_order || !seen_shape)
            bad(".npy header lacks descr, fortran_order or shape");
        if (descr != "<f4")
            bad("inputs must be little-endian float32 ('<f4'), not '" + descr + "'");
        if (fortran)
            bad("inputs must be in C order (fortran_order is True)");
        if (shape.size() < 2)
            bad("inputs must have shape (n, d1, ...), not " + std::to_string(shape.size()) +
                " dimension(s)");
        if (shape.size() > max_dims)
            bad("inputs have too many dimensions");
        if (shape[0] == 0)
            bad("inputs hold no sample (n is 0)");
        n_ = shape[0];
        sample_shape_.assign(1, 1);
        uint64_t floats = 1;
        for (size_t i = 1; i < shape.size(); i++) {
            if (shape[i] == 0 || shape[i] > (uint64_t)INT_MAX)
                bad("inputs dimension " + std::to_string(i) + " is out of range");
            if (floats > (uint64_t)INT_MAX / shape[i])
                bad("one input sample is too large");
            floats *= shape[i];
            sample_shape_.push_back((int)shape[i]);
        }
        row_bytes_ = floats * sizeof(float);
    }

    std::string path_;
    int fd_ = -1;
    uint64_t n_ = 0;
    uint64_t row_bytes_ = 0;
    uint64_t data_offset_ = 0;
    std::vector<int> sample_shape_;
};

long long micros(std::chrono::steady_clock::duration d)
{
    return (long long)std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

/* setInput + forward: the part that is timed. Returns the first output. */
cv::Mat infer(cv::dnn::Net &net, const cv::Mat &blob, long long *us)
{
    auto t0 = std::chrono::steady_clock::now();
    net.setInput(blob);
    cv::Mat out = net.forward();
    auto t1 = std::chrono::steady_clock::now();
    *us = micros(t1 - t0);
    return out;
}

/* The index of the largest output value; NaNs never win. */
unsigned long argmax(const cv::Mat &out, bool *all_nan)
{
    if (out.empty())
        throw Failure("the model's output is empty");
    cv::Mat f = out;
    if (f.depth() != CV_32F)
        out.convertTo(f, CV_32F);
    if (!f.isContinuous())
        f = f.clone();
    const float *v = f.ptr<float>();
    size_t total = f.total() * (size_t)f.channels();
    size_t best = 0;
    bool found = false;
    for (size_t i = 0; i < total; i++) {
        if (std::isnan(v[i]))
            continue;
        if (!found || v[i] > v[best]) {
            best = i;
            found = true;
        }
    }
    *all_nan = !found;
    return (unsigned long)best;
}

/* The runtime's version as the protocol wants it ([A-Za-z0-9._+-]{1,64}). */
std::string runtime_version()
{
    std::string v = cv::getVersionString();
    bool ok = !v.empty() && v.size() <= 64;
    for (char c : v)
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '+' || c == '-'))
            ok = false;
    return ok ? v : std::string(CV_VERSION);
}

/* Keeps the real stdout for the protocol and points fd 1 at stderr, so that
 * whatever a library prints cannot corrupt the protocol output (OpenCV's log
 * writes INFO and below to std::cout, e.g. with OPENCV_LOG_LEVEL=INFO). */
FILE *take_stdout()
{
    std::fflush(stdout);
    int fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        throw Failure("standard output is not open: " + errno_text(errno));
    if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
        throw Failure("cannot redirect fd 1: " + errno_text(errno));
    FILE *f = fdopen(fd, "w");
    if (!f)
        throw Failure("fdopen: " + errno_text(errno));
    return f;
}

int run(const Options &o)
{
    FILE *out = take_stdout();

    Inputs inputs(o.inputs);
    if (o.threads > 0)
        cv::setNumThreads(o.threads);

    /* OpenCV's message for a missing file is obscure: check it first. */
    int mfd = open(o.model.c_str(), O_RDONLY | O_CLOEXEC);
    if (mfd < 0)
        throw Failure(o.model + ": cannot open model: " + errno_text(errno));
    struct stat st;
    bool regular = fstat(mfd, &st) == 0 && S_ISREG(st.st_mode);
    close(mfd);
    if (!regular)
        throw Failure(o.model + ": the model is not a regular file");

    auto t0 = std::chrono::steady_clock::now();
    cv::dnn::Net net = cv::dnn::readNetFromONNX(o.model);
    auto t1 = std::chrono::steady_clock::now();
    if (net.empty())
        throw Failure(o.model + ": OpenCV read no network from the model");
    long long load_us = micros(t1 - t0);

    const std::vector<int> &shape = inputs.sample_shape();
    cv::Mat blob((int)shape.size(), shape.data(), CV_32F);
    float *row = blob.ptr<float>();

    inputs.read_row(0, row);
    long long first_us = 0, us = 0;
    bool all_nan = false, warned_nan = false;
    cv::Mat y = infer(net, blob, &first_us);
    (void)argmax(y, &all_nan); /* an unusable output fails before any line */
    for (unsigned long long w = 0; w < o.warmup; w++)
        (void)infer(net, blob, &us);

    std::fprintf(out, "modelfleet-runner 1 %s %s\n", runtime_name, runtime_version().c_str());
    std::fprintf(out, "load %lld\n", load_us);
    std::fprintf(out, "first %lld\n", first_us);
    const uint64_t n = inputs.count();
    for (uint64_t i = 0; i < n; i++) {
        inputs.read_row(i, row);
        y = infer(net, blob, &us);
        unsigned long cls = argmax(y, &all_nan);
        if (all_nan && !warned_nan) {
            std::fprintf(stderr, "%s: sample %llu: every output is NaN; reporting class 0\n", prog,
                         (unsigned long long)i);
            warned_nan = true;
        }
        std::fprintf(out, "%llu %lu %lld\n", (unsigned long long)i, cls, us);
    }
    std::fprintf(out, "end %llu\n", (unsigned long long)n);
    if (std::fflush(out) != 0 || std::ferror(out)) {
        int e = errno;
        std::fclose(out);
        throw Failure("cannot write standard output: " + errno_text(e));
    }
    if (std::fclose(out) != 0)
        throw Failure("cannot write standard output: " + errno_text(errno));
    return 0;
}

} // namespace

int main(int argc, char **argv)
{
    Options o = parse_args(argc, argv);
    try {
        return run(o);
    } catch (const cv::Exception &e) {
        std::fprintf(stderr, "%s: OpenCV: %s\n", prog, e.what());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: %s\n", prog, e.what());
    } catch (...) {
        std::fprintf(stderr, "%s: unknown error\n", prog);
    }
    return 1;
}

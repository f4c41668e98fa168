"""A literal, unoptimised re-statement of the reference's SAU (BackdoorBench defense/sau.py:
``Shared_PGD`` and the outer step of ``mitigation``), in its pass structure.

Kept for the equivalence tests (and ``bench_scripts/speed.py``'s reference mode), never
used by the plugin: it recomputes everything the way the reference
does (clean forwards of both models at every PGD step, ``loss.backward()`` filling
parameter gradients too, Python loops in the L2 / L1 projections, the frozen model
re-run on clean data in the outer step, boolean indexing instead of masks). Speed work
on the package must keep producing the same numbers as this file.

Two additions that do not change the algorithm: ``generator`` makes ``random`` init draw
from a given generator (the reference's ``torch.rand_like`` draws from the global one),
so that the package, which draws from its own seeded generator, can be compared; and
``trace``, a list that receives the intermediate masks and probabilities, from which the
tests count which branches a fixture exercises.
"""

import torch
import torch.nn.functional as F


def denormalize(x, mean, std):
    # torchvision's two-Normalize inverse: Normalize(0, 1/std) then Normalize(-mean, 1)
    return (x - 0.0) / (1.0 / std) - (-mean)


def normalize(x, mean, std):
    return (x - mean) / std


def perturbed(images, pert, mean, std):
    return normalize(denormalize(images, mean, std) + pert, mean, std)


def projection(pert, norm_type, bound, trace=None):
    if norm_type == "L_inf":
        pert.data = torch.clamp(pert.data, -bound, bound)
    elif norm_type == "L1":
        norm = torch.sum(torch.abs(pert), dim=(1, 2, 3), keepdim=True)
        for i in range(pert.shape[0]):
            if norm[i] > bound:
                pert.data[i] = pert.data[i] * bound / norm[i].item()
    elif norm_type == "L2":
        norm = torch.sum(pert ** 2, dim=(1, 2, 3), keepdim=True) ** 0.5
        for i in range(pert.shape[0]):
            if norm[i] > bound:
                pert.data[i] = pert.data[i] * bound / norm[i].item()
    elif norm_type == "Reg":
        pass
    else:
        raise NotImplementedError(norm_type)
    if trace is not None and norm_type in ("L1", "L2"):
        trace.append({"projection_norm": norm.flatten().detach().clone(), "bound": bound})
    return pert


def init_pert(pert, init_type, norm_type, bound, generator=None, trace=None):
    if init_type == "zero":
        pert.data = pert.data * 0
    elif init_type == "random":
        pert.data = (torch.rand_like(pert.data) if generator is None
                     else torch.rand(pert.shape, generator=generator, dtype=pert.dtype))
    elif init_type == "max":
        pert.data = pert.data + bound
    elif init_type == "min":
        pert.data = pert.data - bound
    else:
        raise NotImplementedError(init_type)
    return projection(pert, norm_type, bound, trace)


def shared_pgd(model, model_ref, images, labels, mean, std, *, beta_1, beta_2, bound, norm_type, step_size,
               num_steps, init_type, generator=None, trace=None):
    pert = torch.zeros_like(images, requires_grad=True)
    pert = init_pert(pert, init_type, norm_type, bound, generator, trace)
    steps = 0
    for _ in range(num_steps):
        steps += 1
        pert_image = perturbed(images, pert, mean, std)
        ori_lab = torch.argmax(model(images), axis=1).long()
        ori_lab_ref = torch.argmax(model_ref(images), axis=1).long()
        per_logits = model(pert_image)
        per_logits_ref = model_ref(pert_image)
        pert_label = torch.argmax(per_logits, dim=1)
        pert_label_ref = torch.argmax(per_logits_ref, dim=1)
        success_attack = pert_label != ori_lab
        success_attack_ref = pert_label_ref != ori_lab_ref
        common_attack = torch.logical_and(success_attack, success_attack_ref)
        shared_attack = torch.logical_and(common_attack, pert_label == pert_label_ref)

        loss_adv = torch.tensor(0.0, dtype=images.dtype)
        if torch.logical_not(success_attack).sum() != 0:
            loss_adv = loss_adv + F.cross_entropy(per_logits, labels, reduction="none")[torch.logical_not(success_attack)].sum()
        if torch.logical_not(success_attack_ref).sum() != 0:
            loss_adv = loss_adv + F.cross_entropy(per_logits_ref, labels, reduction="none")[torch.logical_not(success_attack_ref)].sum()
        loss_adv = -loss_adv / 2 / images.shape[0]

        p_model = F.softmax(per_logits, dim=1).clamp(min=1e-8)
        p_ref = F.softmax(per_logits_ref, dim=1).clamp(min=1e-8)
        mix_p = 0.5 * (p_model + p_ref)
        loss_js = 0.5 * (p_model * p_model.log() + p_ref * p_ref.log()) - 0.5 * (p_model * mix_p.log() + p_ref * mix_p.log())
        loss_cross = loss_js[torch.logical_not(shared_attack)].sum(dim=1).sum() / images.shape[0]

        pert.grad = None
        loss_ae = beta_1 * loss_adv + beta_2 * loss_cross
        loss_ae.backward()  # parameter gradients are computed (and accumulated) too
        pert.data = pert.data - step_size * pert.grad.sign()
        pert = projection(pert, norm_type, bound, trace)
        if trace is not None:
            trace.append({"step": steps, "labels": labels, "ori_lab": ori_lab, "ori_lab_ref": ori_lab_ref,
                          "pert_label": pert_label, "pert_label_ref": pert_label_ref,
                          "success_attack": success_attack, "success_attack_ref": success_attack_ref,
                          "shared_attack": shared_attack})
        if torch.logical_not(shared_attack).sum() == 0:
            break
    if trace is not None:
        trace.append({"pgd_steps": steps, "num_steps": num_steps})
    return pert.detach(), steps


def outer_step(model, model_ref, optimizer, images, labels, pert, mean, std, *, lmd_1, lmd_2, lmd_3, num_classes,
               train_mode=False, trace=None):
    pert_image = perturbed(images, pert.detach(), mean, std)
    if train_mode:
        model.train()
    concat_logits = model(torch.cat([images, pert_image], dim=0))
    logits, per_logits = torch.split(concat_logits, images.shape[0], dim=0)
    model.eval()
    logits_ref = model_ref(images)
    per_logits_ref = model_ref(pert_image)
    ori_lab_ref = torch.argmax(logits_ref, axis=1).long()
    pert_label_ref = torch.argmax(per_logits_ref, dim=1)
    success_attack_ref = (pert_label_ref != labels) & (pert_label_ref != ori_lab_ref)

    loss_cl = F.cross_entropy(logits, labels, reduction="mean")
    loss_at = F.cross_entropy(per_logits, labels, reduction="mean")
    potential_poison = success_attack_ref
    if potential_poison.sum() == 0:
        loss_shared = torch.tensor(0.0, dtype=images.dtype)
    else:
        one_hot = F.one_hot(pert_label_ref, num_classes=num_classes)
        neg_one_hot = 1 - one_hot
        neg_p = (F.softmax(per_logits, dim=1) * neg_one_hot).sum(dim=1)[potential_poison]
        pos_p = (F.softmax(per_logits, dim=1) * one_hot).sum(dim=1)[potential_poison]
        loss_shared = (-torch.sum(torch.log(1e-6 + neg_p.clamp(max=0.999)))
                       - torch.sum(torch.log(1 + 1e-6 - pos_p.clamp(min=0.001)))) / 2
        loss_shared = loss_shared / images.shape[0]
    if trace is not None:
        trace.append({"outer_labels": labels, "ori_lab_ref_outer": ori_lab_ref, "pert_label_ref_outer": pert_label_ref,
                      "potential_poison": potential_poison,
                      "pos_p": (F.softmax(per_logits, dim=1) * F.one_hot(pert_label_ref, num_classes)).sum(dim=1).detach()})
    optimizer.zero_grad()
    loss = lmd_1 * loss_cl + lmd_2 * loss_at + lmd_3 * loss_shared
    loss.backward()
    optimizer.step()
    model.eval()
    return float(loss.detach())

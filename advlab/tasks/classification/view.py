"""The report's view of classification rows: clean accuracy, success rate, fooling ratio, accuracy
after the attack and distances in the summary; class names and confidences on the cards."""
from __future__ import annotations

from typing import Any, ClassVar

from advlab.view import fmt
from advlab.view.task_view import Column, TaskView, class_text, distance_text, success_rate


class ClassificationView(TaskView):
    label = "classification"
    score_label = "accuracy"
    right = "its top-1 class is its label"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("clean acc.", lambda r: fmt.pct(r.get("clean_accuracy"))),
        Column("success rate", success_rate),
        Column("fooling ratio", lambda r: fmt.pct(r.get("fooling_ratio"))),
        Column("fooling (train)", lambda r: fmt.pct(r.get("fooling_ratio_train")), needs="fooling_ratio_train"),
        Column("acc. on its adversarials", lambda r: fmt.pct(r.get("accuracy"))),
        Column("median L2", lambda r: fmt.num(r.get("median_l2"))),
        Column("median L∞", lambda r: fmt.num(r.get("median_linf"))),
        Column("median MSE", lambda r: fmt.sci(r.get("median_mse"))),
        Column("median queries", lambda r: fmt.integer(r.get("queries_median"))),
    )
    glossary: ClassVar[tuple[tuple[str, str], ...]] = (
        ("clean acc.", "top-1 accuracy of the model on the unmodified images."),
        ("success rate", "share of the images the model classified correctly for which the attack found an "
                         "adversarial example (misclassified images are not attacked)."),
        ("fooling ratio", "share of all images whose predicted label changed with respect to the clean prediction "
                          "(Moosavi-Dezfooli et al., \"Universal adversarial perturbations\", 2017)."),
        ("fooling (train)", "universal perturbations: fooling ratio on the images the perturbation was computed on; "
                            "the fooling ratio column is then measured on held-out images when the run has them "
                            "(see each attack's section). Rows marked baseline add random noise of the same norm "
                            "instead (Moosavi-Dezfooli et al. 2017)."),
        ("acc. on its adversarials", "top-1 accuracy on the images the attack returned, at whatever distance they "
                                     "lie. Not a robust accuracy: that belongs to a threat model and is the "
                                     "matrix's; for an attack bounded by that threat model's eps the two agree, "
                                     "for one without a bound (boundary) this is the accuracy at any distance."),
        ("median L2 / L∞ / MSE", "distance between adversarial and original image, for pixels in [0, 1]; medians "
                                 "over the successful attacks. MSE is the mean squared difference per pixel value."),
        ("median queries", "model queries (forward passes per image) the attack used, median over images."),
    )
    status: ClassVar[dict[str, str]] = {**TaskView.status, "skipped": "not attacked (misclassified when clean)"}
    defense_status: ClassVar[dict[str, str]] = {**TaskView.defense_status, "success": "defense restored the label",
                                                "failed": "still misclassified after the defense"}

    def card_text(self, sample: dict[str, Any], l2: Any, no_adv: str | None) -> dict[str, str]:
        return {
            "label_text": class_text(sample.get("label_name"), sample.get("label")),
            "clean_text": class_text(sample.get("clean_pred_name"), sample.get("clean_pred"), sample.get("clean_conf")),
            "adv_text": class_text(sample.get("adv_pred_name"), sample.get("adv_pred"), sample.get("adv_conf")),
            "distance_text": distance_text(sample, l2, no_adv),
        }

    def defense_text(self, row: dict[str, Any]) -> dict[str, str]:
        return {f"{part}_text": class_text(row.get(f"{key}_name"), row.get(key))
                for part, key in (("label", "label"), ("clean", "clean_pred"), ("adv", "adv_pred"),
                                  ("denoised", "denoised_pred"))}

    def restored(self, row: dict[str, Any]) -> bool | None:
        """The record's verdict, or for records written before it existed: denoised class == label."""
        recorded = super().restored(row)
        if recorded is not None:
            return recorded
        for a, b in (("denoised_pred", "label"), ("denoised_pred_name", "label_name")):
            if row.get(a) not in (None, "") and row.get(b) not in (None, ""):
                return str(row[a]) == str(row[b])
        return None


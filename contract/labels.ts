/**
 * Label schemes: the one place that says what each class index means.
 * Training writes these into the model's metadata; the server and the browser read them back from there.
 */

export type Task = 'age' | 'ethnicity' | 'gender';
export const TASKS: readonly Task[] = ['age', 'ethnicity', 'gender'];

export type AgeScheme = 'coursework' | 'decades';
export const AGE_SCHEMES: readonly AgeScheme[] = ['coursework', 'decades'];

/** Inclusive lower bounds of each age group; the last group is open-ended. */
const AGE_GROUP_STARTS: Record<AgeScheme, readonly number[]> = {
  // The coursework's final scheme, as in the code that produced its numbers.
  coursework: [1, 11, 21, 41, 61, 91],
  // Its first scheme: ten decades, the last one open-ended.
  decades: [1, 11, 21, 31, 41, 51, 61, 71, 81, 91],
};

export const MIN_AGE = 1;
export const MAX_AGE = 116;

export const ETHNICITY_LABELS: readonly string[] = ['White', 'Black', 'Asian', 'Indian', 'Others'];
export const GENDER_LABELS: readonly string[] = ['male', 'female'];

/** Names of the age groups of a scheme, e.g. "1-10", ..., "91+". */
export function ageGroupLabels(scheme: AgeScheme = 'coursework'): string[] {
  const starts = AGE_GROUP_STARTS[scheme];
  return starts.map((start, i) => (i + 1 < starts.length ? `${start}-${starts[i + 1] - 1}` : `${start}+`));
}

/** Index of the age group that contains `age` (whole years, 1 to 116). */
export function ageGroupIndex(age: number, scheme: AgeScheme = 'coursework'): number {
  if (!Number.isInteger(age) || age < MIN_AGE || age > MAX_AGE) {
    throw new RangeError(`Age ${age} is out of range; expected a whole number from ${MIN_AGE} to ${MAX_AGE}`);
  }
  const starts = AGE_GROUP_STARTS[scheme];
  let index = 0;
  while (index + 1 < starts.length && age >= starts[index + 1]) index++;
  return index;
}

/** Class labels of a task, in class-index order. */
export function taskLabels(task: Task, ageScheme: AgeScheme = 'coursework'): string[] {
  switch (task) {
    case 'age':
      return ageGroupLabels(ageScheme);
    case 'ethnicity':
      return [...ETHNICITY_LABELS];
    case 'gender':
      return [...GENDER_LABELS];
  }
}

/** One labelled face, as read from a UTKFace file name or a Kaggle CSV row. */
export interface FaceLabels {
  age: number;
  /** 0 = male, 1 = female */
  gender: number;
  /** 0 = White, 1 = Black, 2 = Asian, 3 = Indian, 4 = Others */
  ethnicity: number;
}

/** The class index of a face for a task. */
export function classIndex(labels: FaceLabels, task: Task, ageScheme: AgeScheme = 'coursework'): number {
  switch (task) {
    case 'age':
      return ageGroupIndex(labels.age, ageScheme);
    case 'ethnicity':
      return labels.ethnicity;
    case 'gender':
      return labels.gender;
  }
}
